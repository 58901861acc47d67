"""Emotion from the voice: the backend registry (`registry`) and the backends themselves (`embedded/`,
`audio_classifier`, `generative/` for the think/answer models). Each answers in the canonical labels."""
