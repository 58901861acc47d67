"""Pure processing of one recording, grouped by input: media (decode, cache), speech (VAD, prosody,
ASR), voice (emotion backends), text (words), face (frames); then fusion and reasoning. Nothing here
touches the database or Celery: the stage bodies in worker/stages do."""
