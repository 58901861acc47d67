"""Emotion backends behind one registry; every backend answers in CANONICAL_LABELS."""

from __future__ import annotations

from pathlib import Path

from worker.pipeline.contracts import EmotionModel
from worker.pipeline.labels import CANONICAL_LABELS
from worker.pipeline.voice.names import BACKENDS

__all__ = ["BACKENDS", "CANONICAL_LABELS", "BackendUnavailable", "load_backend"]

FUNASR_RELEASES = ("emotion2vec", "sensevoice")


class BackendUnavailable(ValueError):
    """The requested backend exists in the design but cannot be loaded by this build."""


def load_backend(
    backend: str, model_path: Path | None, device: str, dtype: str, *, max_new_tokens: int | None = None
) -> EmotionModel:
    """Load a backend once per worker process.

    `model_path` is a local weights file or directory (no hub access on these machines);
    `dtype` only matters to the GPU backends; `max_new_tokens` to the generative ones (default:
    CALLPULSE_OMNI_MAX_NEW_TOKENS).
    """
    if backend == "embedded":
        from worker.pipeline.voice.embedded.model import load_model

        return load_model(device=device, weights_path=model_path)
    if backend not in BACKENDS:
        raise BackendUnavailable(f"unknown emotion backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend in FUNASR_RELEASES:
        # Released for FunASR, run by our own torch code: no transformers, no [gpu] extra.
        if model_path is None:
            raise BackendUnavailable(f"emotion backend {backend!r} needs the downloaded release directory: "
                                     "set CALLPULSE_MODEL_PATH or --model-path (no hub downloads)")
        if backend == "sensevoice":
            from worker.pipeline.voice.funasr import sensevoice

            return sensevoice.load_model(model_path, device, dtype)
        from worker.pipeline.voice.funasr import emotion2vec

        return emotion2vec.load_model(model_path, device, dtype)
    from worker.pipeline.hf_common import INSTALL_HINT, MissingDependency

    if model_path is None:
        raise BackendUnavailable(
            f"emotion backend {backend!r} needs the [gpu] extra ({INSTALL_HINT}) and a local checkpoint "
            "directory: set CALLPULSE_MODEL_PATH or --model-path (no hub downloads)"
        )

    try:
        if backend == "audio-classifier":
            from worker.pipeline.voice import audio_classifier

            return audio_classifier.load_model(model_path, device, dtype)
        if max_new_tokens is None:
            from callpulse.settings import get_settings

            max_new_tokens = get_settings().omni_max_new_tokens
        if backend == "r1-omni":
            from worker.pipeline.voice.generative.r1_omni import model as r1_omni

            return r1_omni.load_model(model_path, device, dtype, max_new_tokens=max_new_tokens)
        from worker.pipeline.voice.generative import omni

        return omni.load_model(model_path, device, dtype, max_new_tokens=max_new_tokens)
    except MissingDependency as exc:
        raise BackendUnavailable(
            f"emotion backend {backend!r} needs transformers, which is not installed here: {INSTALL_HINT}"
        ) from exc
