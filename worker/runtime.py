"""Per-process model holders: each worker process loads its models once and reuses them."""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch

from callpulse.settings import Settings
from worker.pipeline import segment
from worker.pipeline.contracts import EmotionModel
from worker.pipeline.emotion import load_backend

log = logging.getLogger(__name__)
_lock = threading.Lock()
_emotion: dict[tuple[str, str, str, str], EmotionModel] = {}
_vad: Any = None


def emotion_model(settings: Settings) -> EmotionModel:
    key = (settings.model_backend, str(settings.model_path or ""), settings.device, settings.dtype)
    with _lock:
        if key not in _emotion:
            if settings.torch_threads > 0:
                torch.set_num_threads(settings.torch_threads)
            log.info("loading emotion backend %s on %s", settings.model_backend, settings.device)
            _emotion[key] = load_backend(settings.model_backend, settings.model_path, settings.device,
                                         settings.dtype)
        return _emotion[key]


def vad_model() -> Any:
    global _vad
    with _lock:
        if _vad is None:
            _vad = segment.load_model("cpu")
        return _vad


def release() -> None:
    """Drop model references so their memory (and any GPU memory) is freed on shutdown."""
    global _vad
    with _lock:
        _emotion.clear()
        _vad = None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # hand cached blocks back so the next process on the GPU gets them
