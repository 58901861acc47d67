"""Per-process model holders: each worker process loads its models once and reuses them."""

from __future__ import annotations

import logging
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from callpulse import metrics
from callpulse.settings import Settings
from worker.pipeline import fusion
from worker.pipeline.contracts import EmotionModel
from worker.pipeline.speech import asr, sensevoice_asr, whisper_ct2
from worker.pipeline.speech import vad as segment
from worker.pipeline.voice.registry import load_backend

log = logging.getLogger(__name__)
_lock = threading.Lock()
_emotion: dict[tuple[Any, ...], EmotionModel] = {}
_vad: Any = None
_asr: dict[tuple[Any, ...], asr.AsrModel | whisper_ct2.Ct2Asr | sensevoice_asr.SenseVoiceAsr] = {}


def emotion_model(settings: Settings) -> EmotionModel:
    """The configured audio backend wrapped with the text and face models (fusion.MultimodalModel)."""
    key = (settings.model_backend, str(settings.model_path or ""), settings.device, settings.dtype,
           settings.text_model_enabled, settings.face_model_enabled, settings.uncertain_below,
           settings.speaker_normalisation)
    with _lock:
        if key not in _emotion:
            if settings.torch_threads > 0:
                torch.set_num_threads(settings.torch_threads)
            log.info("loading emotion backend %s on %s", settings.model_backend, settings.device)
            started = time.perf_counter()
            audio = load_backend(settings.model_backend, settings.model_path, settings.device, settings.dtype)
            metrics.MODEL_LOAD.labels(settings.model_backend).observe(time.perf_counter() - started)
            _emotion[key] = fusion.MultimodalModel(
                audio,
                text=_component("text_emotion", settings.device) if settings.text_model_enabled else None,
                face=_component("face_expression", settings.device) if settings.face_model_enabled else None,
                uncertain_below=settings.uncertain_below,
                speaker_normalisation=settings.speaker_normalisation,
            )
        return _emotion[key]


def _component(weights: str, device: str) -> fusion.Lazy[Any] | None:
    """A text/face model loaded on first use; None when its weights are not installed."""
    path = Path(str(resources.files("worker").joinpath("weights", f"{weights}.json")))
    version = fusion.weights_version(path)
    if version is None:
        log.warning("%s weights not found at %s: that modality is off", weights, path)
        return None

    def load() -> Any:
        if weights == "text_emotion":
            from worker.pipeline.text import emotion as text_emotion

            return text_emotion.load_model(device)
        from worker.pipeline.face import expression as face

        return face.load_model(device)

    return fusion.Lazy(version.rsplit("-v", 1)[0], version, load)


def vad_model() -> Any:
    global _vad
    with _lock:
        if _vad is None:
            _vad = segment.load_model("cpu")
        return _vad


def asr_model(settings: Settings) -> asr.AsrModel | whisper_ct2.Ct2Asr | sensevoice_asr.SenseVoiceAsr:
    """The speech recogniser, loaded on the first asr task of this process (only asr workers pay for
    it): faster-whisper over the bundled Whisper-base, or over CALLPULSE_ASR_MODEL_PATH when that is
    a CTranslate2 directory; a transformers Whisper checkpoint there keeps the transformers engine;
    CALLPULSE_ASR_ENGINE=sensevoice reads a SenseVoice-Small release instead.
    A failure (AsrUnavailable) is not remembered: fixing the directory needs no worker restart."""
    path = settings.asr_model_path
    shared: Any = None
    if settings.asr_engine == "sensevoice" and settings.model_backend == "sensevoice" and (
            path is None or path == settings.model_path):
        # One download serves both, and one copy in memory: the emotion backend's model also
        # gives the words (loaded outside _lock, which emotion_model takes itself).
        path = settings.model_path
        shared = getattr(emotion_model(settings), "audio", None)  # fusion.MultimodalModel's voice model
    key = (settings.asr_engine, str(path or ""), settings.device, settings.dtype, settings.asr_compute_type,
           settings.asr_threads, id(shared))
    with _lock:
        if key not in _asr:
            if settings.asr_engine == "sensevoice":
                if settings.torch_threads > 0:
                    torch.set_num_threads(settings.torch_threads)
                log.info("loading ASR model %s on %s (SenseVoice)", path, settings.device)
                _asr[key] = sensevoice_asr.wrap(shared) if shared is not None else sensevoice_asr.load_model(
                    path, settings.device, settings.dtype)
            elif path is None or whisper_ct2.is_ct2_dir(path):
                log.info("loading ASR model %s on %s", path or "(bundled Whisper-base)", settings.device)
                _asr[key] = whisper_ct2.load_model(path, settings.data_dir, settings.device,
                                                   settings.asr_compute_type, settings.asr_threads)
            else:
                if settings.torch_threads > 0:
                    torch.set_num_threads(settings.torch_threads)
                log.info("loading ASR model %s on %s (transformers)", path, settings.device)
                _asr[key] = asr.load_model(path, settings.device, settings.dtype)
        return _asr[key]


def release() -> None:
    """Drop model references so their memory (and any GPU memory) is freed on shutdown."""
    global _vad
    with _lock:
        _emotion.clear()
        _asr.clear()
        _vad = None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # hand cached blocks back so the next process on the GPU gets them
