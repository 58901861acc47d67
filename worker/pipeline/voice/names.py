"""The emotion backends' names, in one place: the registry loads them, Settings
(`CALLPULSE_MODEL_BACKEND`) and the CLI's `--backend` accept exactly these. Kept free of imports so
reading the settings never loads the pipeline."""

from __future__ import annotations

from typing import Literal, get_args

BackendName = Literal["embedded", "audio-classifier", "omni", "r1-omni", "emotion2vec", "sensevoice"]
BACKENDS: tuple[str, ...] = get_args(BackendName)
