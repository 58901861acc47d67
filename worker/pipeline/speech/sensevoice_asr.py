"""SenseVoice-Small as the ASR engine (`CALLPULSE_ASR_ENGINE=sensevoice`): the same release and the
same one-pass network as the `sensevoice` emotion backend, read here for its words.

Each channel's speech is packed into windows of at most 30 s (asr.plan_windows, as for Whisper);
each window is one non-autoregressive pass (no beam, no hallucinated continuations): greedy CTC gives
the tokens and the frames they were emitted on (60 ms each), grouped into timed words; the language
tag of the window is the utterances' language (a window tagged `nospeech` gives no words). Text
normalisation is on (`withitn`: punctuation and digits), so sentences end where the model says.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from worker.pipeline.contracts import DecodedAudio, Word
from worker.pipeline.media import audio_store
from worker.pipeline.speech.asr import (
    SPACELESS,
    AsrUnavailable,
    Span,
    _utterances,
    base_language,
    plan_windows,
)
from worker.pipeline.speech.vad import speaker_name
from worker.pipeline.text.transcript import Utterance, to_rows

log = logging.getLogger(__name__)

ENGINE = "sensevoice"
LANGUAGES = ("zh", "en", "yue", "ja", "ko")


@dataclass
class SenseVoiceAsr:
    model: Any  # worker.pipeline.voice.funasr.sensevoice.SenseVoiceModel
    version: str

    def transcribe(
        self,
        audio: DecodedAudio,
        channel_roles: dict[int, str],
        speech: Sequence[Span] | None = None,
        language: str | None = None,
        batch_size: int = 4,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Transcript rows of every channel, in the shape the other engines give (asr.transcribe)."""
        if speech is None:
            speech = [Span(ch, 0.0, audio.duration_s) for ch in range(audio.channels)]
        forced = self.language_code(language)
        roles = [channel_roles.get(ch, "unknown") for ch in range(audio.channels)]
        channels = sorted({sp.channel for sp in speech if 0 <= sp.channel < audio.channels})
        utterances: list[Utterance] = []
        for done, channel in enumerate(channels, start=1):
            windows = plan_windows([sp for sp in speech if sp.channel == channel], audio.duration_s)
            speaker = speaker_name(roles[channel], channel, roles)
            for start in range(0, len(windows), max(1, batch_size)):
                utterances.extend(self._windows(audio, channel, windows[start: start + max(1, batch_size)],
                                                forced, speaker))
            if progress is not None:
                progress(done, len(channels))
        utterances.sort(key=lambda u: (u.start_s, u.channel or 0))
        return to_rows(utterances)

    def language_code(self, language: str | None) -> str | None:
        """"zh-CN" → "zh"; a language SenseVoice was not trained on → None (detected per window)."""
        if not language:
            return None
        code = base_language(language)
        if code not in LANGUAGES:
            log.warning("ASR: SenseVoice does not know language %r; detecting it instead", language)
            return None
        return code

    def _windows(self, audio: DecodedAudio, channel: int, windows: list[Span], language: str | None,
                 speaker: str) -> list[Utterance]:
        waves = [np.ascontiguousarray(audio_store.slice_mono(audio, channel, w.start_s, w.end_s))
                 for w in windows]
        analyses = self.model.analyze(waves, [audio.sample_rate] * len(waves), [language] * len(waves),
                                      textnorm="withitn")
        out: list[Utterance] = []
        for window, wave, analysis in zip(windows, waves, analyses, strict=True):
            if analysis.language == "nospeech":
                continue
            length = wave.size / audio.sample_rate
            words = [Word(round(window.start_s + w.start_s, 3), round(window.start_s + w.end_s, 3), w.text,
                          round(w.probability, 4))
                     for w in self.model.words(analysis, length)]
            lang = analysis.language
            spaceless = lang in SPACELESS
            out.extend(replace(u, language=lang) for u in _utterances(words, speaker, channel, spaceless))
        return out


def wrap(model: Any) -> SenseVoiceAsr:
    """The emotion backend's already loaded SenseVoice model as the recogniser (no second copy)."""
    return SenseVoiceAsr(model=model, version=f"{ENGINE}:{model.version}")


def load_model(model_path: Path | None, device: str = "cpu", dtype: str = "auto") -> SenseVoiceAsr:
    """A SenseVoice-Small release directory as the recogniser; any problem is AsrUnavailable (the
    call is then analyzed without words, with the reason logged)."""
    if model_path is None:
        raise AsrUnavailable("CALLPULSE_ASR_ENGINE=sensevoice needs CALLPULSE_ASR_MODEL_PATH (or "
                             "CALLPULSE_MODEL_PATH with CALLPULSE_MODEL_BACKEND=sensevoice): the downloaded "
                             "SenseVoice-Small directory")
    from worker.pipeline.voice.funasr import sensevoice
    from worker.pipeline.voice.funasr.release import CheckpointMismatch

    try:
        model = sensevoice.load_model(model_path, device, dtype, warm=False)
    except (FileNotFoundError, CheckpointMismatch, ValueError) as exc:
        raise AsrUnavailable(f"{model_path} is not a usable SenseVoice-Small release: {exc}") from exc
    return wrap(model)
