"""Emotion backends behind one registry; every backend answers in CANONICAL_LABELS."""

from __future__ import annotations

from pathlib import Path

from worker.pipeline.contracts import EmotionModel
from worker.pipeline.emotion.labels import CANONICAL_LABELS

__all__ = ["BACKENDS", "CANONICAL_LABELS", "BackendUnavailable", "load_backend"]

BACKENDS: tuple[str, ...] = ("embedded", "audio-classifier", "omni", "r1-omni")
_GPU_BACKENDS = frozenset({"audio-classifier", "omni", "r1-omni"})


class BackendUnavailable(ValueError):
    """The requested backend exists in the design but cannot be loaded by this build."""


def load_backend(backend: str, model_path: Path | None, device: str, dtype: str) -> EmotionModel:
    """Load a backend once per worker process.

    `model_path` is a local weights file or directory (no hub access on these machines);
    `dtype` only matters to the GPU backends.
    """
    if backend == "embedded":
        from worker.pipeline.emotion.embedded import load_model

        return load_model(device=device, weights_path=model_path)
    if backend in _GPU_BACKENDS:
        raise BackendUnavailable(
            f"emotion backend {backend!r} needs the [gpu] extra (pip install 'callpulse[gpu]') and is not "
            "available in this build yet; use CALLPULSE_MODEL_BACKEND=embedded"
        )
    raise BackendUnavailable(f"unknown emotion backend {backend!r}; known: {', '.join(BACKENDS)}")
