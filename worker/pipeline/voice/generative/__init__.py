"""Generative think/answer backends: `omni` (Qwen2.5-Omni thinker) and `r1_omni` (the HumanOmni layout),
sharing prompt-independent scoring and result building in `common` and output parsing in `answer_parsing`."""
