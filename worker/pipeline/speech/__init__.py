"""What is said and how: voice activity segmentation (`vad`), prosody measures, speech recognition."""
