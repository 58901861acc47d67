"""Typed contracts passed between pipeline stages (no ORM objects cross these lines)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, Protocol, TypedDict

import numpy as np

Modality = Literal["audio", "video", "text"]


class Evidence(TypedDict):
    """One reason behind a label, tied to absolute call time so a reader can jump to it."""

    start_s: float
    end_s: float
    modality: Modality
    cue: str  # machine-readable cue name, e.g. "pitch", "loudness", "speech_rate", "classifier"
    value: float | str | None  # the cue's measured value (e.g. +31.0 for "+31% over baseline")
    text: str  # one sentence a supervisor can read
    # Face evidence (modality "video"): the face box in the frame (x, y, w, h pixels) and the
    # expression it showed; text evidence (modality "text"): the label the words pointed to.
    box: NotRequired[list[int]]
    label: NotRequired[str]
    words: NotRequired[str]  # text evidence: the words quoted


class Acoustics(TypedDict, total=False):
    """Cheap prosody of one stretch of speech; JSON-serialisable (stored on the segment row)."""

    pitch_hz: float  # median F0 over voiced frames (0 when nothing was voiced)
    pitch_range_st: float  # spread of F0 in semitones (90th - 10th percentile)
    loudness_db: float  # mean RMS level of speech frames, dBFS
    rate_per_s: float  # syllable-like energy peaks per second of speech
    voiced_ratio: float  # share of frames with F0
    pitch_peak_s: float  # offset (s, from segment start) of the highest-pitch frame
    loudness_peak_s: float  # offset (s, from segment start) of the loudest frame


@dataclass(frozen=True)
class DecodedAudio:
    """Whole recording at the pipeline rate, shape (channels, samples): int16 (the worker's decode,
    usually a memory map of the on-disk cache, read in slices) or float32 in [-1, 1] (short audio
    in memory); ``audio_store.slice_mono`` gives float32 slices of either."""

    samples: np.ndarray
    sample_rate: int
    duration_s: float
    has_video: bool = False

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])


@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of one speaker's speech with absolute times in the call."""

    index: int
    channel: int
    speaker: str
    role: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Word:
    """One word (or a short phrase) of a transcript, in absolute call time."""

    start_s: float
    end_s: float
    text: str
    probability: float | None = None  # the recogniser's confidence in it (our ASR); None if unknown
    language: str | None = None  # the language our ASR heard it in ("en"); None if unknown


@dataclass(frozen=True)
class VideoFrame:
    """One video frame sampled inside a segment: H×W×3 uint8 RGB, at absolute call time."""

    time_s: float
    image: np.ndarray


@dataclass
class SegmentInput:
    """What a model backend gets for one segment."""

    key: str  # caller's id for the segment (segment row id, as text)
    audio: np.ndarray  # mono float32 at sample_rate, exactly the segment's span
    sample_rate: int
    start_s: float  # absolute call time of audio[0]
    end_s: float
    role: str
    # The same speaker's median acoustics over the call, for "relative to their baseline" cues.
    baseline: Acoustics | None = None
    acoustics: Acoustics | None = None
    # JSON summary of the same speaker's speech elsewhere in the call, made by the backend's own
    # `speaker_reference` at ingest (per-speaker normalisation); None when the backend has none.
    speaker_reference: dict[str, Any] | None = None
    words: list[Word] = field(default_factory=list)  # transcript words inside the segment
    # The language of those words (the ASR's, else the upload's `language`): the text model reads
    # English only and abstains on others.
    language: str | None = None
    prior: str = "balanced"  # the tenant's class-prior preset (worker/pipeline/priors.py)
    frames: list[VideoFrame] = field(default_factory=list)  # video frames inside the segment


@dataclass
class EmotionResult:
    """A backend's answer for one segment, already mapped onto the canonical labels."""

    label: str
    raw_label: str
    scores: dict[str, float]  # canonical label -> probability, sums to 1
    confidence: float
    valence: float | None = None  # -1..1
    arousal: float | None = None  # 0..1
    evidence: list[Evidence] = field(default_factory=list)
    reasoning_text: str = ""
    # Set by fusion (worker/pipeline/fusion.py): the calibrated confidence is below the setting.
    uncertain: bool = False
    # Each modality's own answer behind the fused one (see db.models.Prediction.modalities).
    modalities: dict[str, Any] = field(default_factory=dict)


class EmotionModel(Protocol):
    """Backend interface: load once per worker process, then predict batches."""

    name: str
    version: str

    def predict(self, batch: list[SegmentInput]) -> list[EmotionResult]: ...
