"""Late fusion of voice, words and face into one calibrated answer per segment.

Every modality model returns probabilities calibrated on its own held-out data (temperature
scaling, docs/MODELS.md). Fusion is weighted log-linear pooling: each available modality votes
with weight prior × its own confidence, so a flat (unsure) modality cannot drown a sure one, and a
segment with voice only keeps the voice model's calibrated answer unchanged. The wrapper
`MultimodalModel` is what workers run: the configured audio backend plus, when the segment has
them, transcript words (text model) and video frames (face model).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from worker.pipeline import priors, reasoning
from worker.pipeline.contracts import EmotionModel, EmotionResult, Evidence, SegmentInput
from worker.pipeline.labels import CANONICAL_LABELS, valence_arousal
from worker.pipeline.text import lexicon

log = logging.getLogger(__name__)

# How much each modality's vote counts before its own confidence scales it. Voice is the model
# trained and tested on most speakers; faces are often half-turned or absent in support videos;
# text emotion from short call utterances is the weakest on held-out dialogue (docs/MODELS.md).
MODALITY_PRIOR: dict[str, float] = {"audio": 1.0, "video": 0.8, "text": 0.6}
# Languages the text model reads (its encoder and head are English).
TEXT_LANGUAGES = frozenset({"en"})
# Labels that are rare in calls and that the voice model gives out-of-domain speech when it cannot
# place it (fear, on speech unlike its acted corpora): asserted only when clearly ahead, otherwise the
# segment is flagged uncertain with its top two labels (docs/MODELS.md, "Abstention").
RARE_LABELS = frozenset({"fear", "disgust", "surprise"})
RARE_LABEL_MIN_CONFIDENCE = 0.7
_FLOOR = 1e-4  # probabilities are floored before the log so one zero cannot veto a label


@dataclass(frozen=True)
class ModalityAnswer:
    """One modality's calibrated answer for a segment."""

    modality: str  # audio | text | video
    model: str
    version: str
    scores: dict[str, float]  # canonical label -> probability, sums to 1

    @property
    def label(self) -> str:
        return max(self.scores, key=self.scores.__getitem__)

    @property
    def confidence(self) -> float:
        return float(self.scores[self.label])


def fuse(answers: list[ModalityAnswer]) -> tuple[dict[str, float], dict[str, float]]:
    """Fused canonical scores and the normalised weight each modality got."""
    if not answers:
        raise ValueError("nothing to fuse")
    raw = {a.modality: MODALITY_PRIOR.get(a.modality, 0.5) * a.confidence for a in answers}
    total = sum(raw.values()) or 1.0
    weights = {m: w / total for m, w in raw.items()}
    logits = np.zeros(len(CANONICAL_LABELS))
    for a in answers:
        p = np.array([max(a.scores.get(label, 0.0), _FLOOR) for label in CANONICAL_LABELS])
        logits += weights[a.modality] * np.log(p)
    logits -= logits.max()
    probs = np.exp(logits)
    probs /= probs.sum()
    return {label: float(p) for label, p in zip(CANONICAL_LABELS, probs, strict=True)}, weights


T = TypeVar("T")


class ComponentUnavailable(RuntimeError):
    """A text or face model could not be loaded: the worker is at fault, not the segment, so the
    task retries instead of marking segments unanalyzable (worker/stages/infer.py)."""


class Lazy(Generic[T]):
    """A component loaded on first use (the text encoder and OpenCV cost seconds and memory that
    audio-only deployments never need), whose version is known without loading it."""

    def __init__(self, name: str, version: str, loader: Callable[[], T]) -> None:
        self.name, self.version = name, version
        self._loader = loader
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                log.info("loading %s %s", self.name, self.version)
                try:
                    self._value = self._loader()
                except Exception as exc:
                    raise ComponentUnavailable(
                        f"{self.name} {self.version} could not be loaded: {exc}") from exc
            return self._value


def weights_version(json_path: Path) -> str | None:
    """The `version` recorded beside shipped weights, or None when they are absent."""
    try:
        return str(json.loads(json_path.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


class MultimodalModel:
    """EmotionModel: the audio backend's answer fused with words and faces where a segment has them.

    `version` names every component ("ser-v2+…;text-minilm-v1+…;face-fer-v1+…"), so a new head of
    any modality makes new prediction rows on rescore and the old ones stay."""

    def __init__(self, audio: EmotionModel, *, text: Lazy[Any] | None = None, face: Lazy[Any] | None = None,
                 uncertain_below: float = 0.5, speaker_normalisation: bool = True) -> None:
        # A backend that reads the frames itself (omni) has already seen the face: a second vote by
        # the face model would count it twice.
        if getattr(audio, "uses_frames", False):
            face = None
        self.audio, self.text, self.face = audio, text, face
        self.uncertain_below = uncertain_below
        self.name = audio.name
        # Per-speaker normalisation only where the voice model offers it and it is not switched off;
        # switched off is another model (other answers), hence another version.
        self.uses_speaker_reference = speaker_normalisation and hasattr(audio, "speaker_reference")
        audio_version = audio.version
        if hasattr(audio, "speaker_reference") and not speaker_normalisation:
            audio_version += "(no-speaker-norm)"
        # The call-phrase lexicon shapes the words' answer, so it is part of the text version.
        parts = [f"{text.version}+{lexicon.LEXICON_VERSION}"] if text is not None else []
        self.version = ";".join([audio_version, *parts] + ([face.version] if face is not None else []))

    def speaker_reference(self, clips: list[np.ndarray], sample_rate: int) -> dict[str, Any] | None:
        if not self.uses_speaker_reference:
            return None
        result: dict[str, Any] = self.audio.speaker_reference(clips, sample_rate)  # type: ignore[attr-defined]
        return result

    def predict(self, batch: list[SegmentInput]) -> list[EmotionResult]:
        audio_results = self.audio.predict(batch)
        texts = self._texts(batch)
        faces = self._faces(batch)
        return [self._fused(seg, result, text, face)
                for seg, result, text, face in zip(batch, audio_results, texts, faces, strict=True)]

    def _texts(self, batch: list[SegmentInput]) -> list[Any]:
        if self.text is None or not any(seg.words for seg in batch):
            return [None] * len(batch)
        return list(self.text.get().predict([list(seg.words) for seg in batch]))

    def _faces(self, batch: list[SegmentInput]) -> list[list[Any]]:
        if self.face is None or not any(seg.frames for seg in batch):
            return [[] for _ in batch]
        model = self.face.get()
        return [model.analyze(seg.frames) if seg.frames else [] for seg in batch]

    def _fused(self, seg: SegmentInput, audio: EmotionResult, text: Any, faces: list[Any]) -> EmotionResult:
        answers = [ModalityAnswer("audio", self.audio.name, self.audio.version, audio.scores)]
        evidence: list[Evidence] = list(audio.evidence)
        # What the voice backend itself reported beside its scores (sensevoice: language, event).
        extra: dict[str, dict[str, Any]] = {"audio": dict(audio.modalities.get("audio", {}))}
        if seg.frames and getattr(self.audio, "uses_frames", False):
            extra["audio"]["frames"] = len(seg.frames)  # this answer saw the face too
        abstained: dict[str, Any] | None = None
        if text is not None and self.text is not None:
            if seg.language and seg.language.split("-")[0] not in TEXT_LANGUAGES:
                # The text head reads English: on other words its answer would be noise that
                # looks like evidence. It abstains, and the reasoning says so.
                abstained = {"model": self.text.name, "version": self.text.version, "label": "abstained",
                             "confidence": 0.0, "weight": 0.0, "text": str(text.text)[:500],
                             "abstained": f"words in '{seg.language}': the text model reads English only"}
                evidence.append(Evidence(
                    start_s=seg.start_s, end_s=seg.end_s, modality="text", cue="text_abstained",
                    value=seg.language, text=f"Words in '{seg.language}': the text model reads English "
                    "only and abstained (weight 0)"))
            else:
                cues = lexicon.find(seg.words)
                text = lexicon.apply(text, cues)
                answers.append(ModalityAnswer("text", self.text.name, self.text.version, dict(text.scores)))
                evidence += reasoning.lexicon_evidence(cues, seg.start_s, seg.end_s)
                evidence += reasoning.text_evidence(text, seg.start_s, seg.end_s)
                extra["text"] = {"text": str(text.text)[:500],
                                 "cues": [{"text": c.text, "start_s": c.start_s, "end_s": c.end_s,
                                           "weight": round(float(c.weight), 4)} for c in text.cues],
                                 "phrases": [{"text": c.text, "start_s": c.start_s, "end_s": c.end_s,
                                              "label": c.label, "weight": c.weight} for c in cues]}
        if faces and self.face is not None:
            answers.append(ModalityAnswer("video", self.face.name, self.face.version, _mean_scores(faces)))
            evidence += reasoning.face_evidence(faces, seg.start_s, seg.end_s)
            extra["video"] = {"frames": len(seg.frames), "faces": len(faces)}
        if len(answers) == 1:
            scores, weights = dict(audio.scores), {"audio": 1.0}
        else:
            scores, weights = fuse(answers)
        if seg.prior != priors.DEFAULT:
            scores = priors.shift(scores, seg.prior)
        label = max(scores, key=scores.__getitem__)
        confidence = scores[label]
        uncertain = confidence < self.uncertain_below or (
            label in RARE_LABELS and confidence < RARE_LABEL_MIN_CONFIDENCE)
        modalities = {
            a.modality: {"model": a.model, "version": a.version, "label": a.label,
                         "confidence": round(a.confidence, 4), "weight": round(weights[a.modality], 4),
                         "scores": {k: round(v, 4) for k, v in a.scores.items()}, **extra.get(a.modality, {})}
            for a in answers
        }
        if abstained is not None:
            modalities["text"] = abstained
        if seg.prior != priors.DEFAULT:
            # Kept with the voice entry (every prediction has one), where the dashboard and API
            # already show each modality's answer: which prior shaped the fused label.
            modalities["audio"]["prior"] = seg.prior
        valence, arousal = _affect(scores, audio)
        text_out = reasoning.summary(seg.role, seg.start_s, seg.end_s, evidence, label, confidence, uncertain)
        if seg.prior != priors.DEFAULT:
            text_out += f" [prior: {seg.prior}]"
        if uncertain:
            # A segment the model cannot place says between what, never just a label.
            first, second = sorted(scores.items(), key=lambda kv: -kv[1])[:2]
            text_out += f" (top two: {first[0]} {first[1]:.2f}, {second[0]} {second[1]:.2f})"
        return EmotionResult(
            label=label, raw_label=audio.raw_label if label == audio.label else label, scores=scores,
            confidence=float(confidence), valence=valence, arousal=arousal, evidence=evidence,
            reasoning_text=text_out, uncertain=uncertain, modalities=modalities,
        )


def _mean_scores(faces: list[Any]) -> dict[str, float]:
    """Per-frame face probabilities averaged over the frames that showed a face."""
    total = dict.fromkeys(CANONICAL_LABELS, 0.0)
    for face in faces:
        for label in CANONICAL_LABELS:
            total[label] += float(face.scores.get(label, 0.0))
    norm = sum(total.values()) or 1.0
    return {k: v / norm for k, v in total.items()}


def _affect(scores: dict[str, float], audio: EmotionResult) -> tuple[float | None, float | None]:
    """Valence/arousal of the fused distribution; the audio model's own when voice alone decided."""
    if scores == audio.scores:
        return audio.valence, audio.arousal
    valence, arousal = valence_arousal(scores)
    return (valence if math.isfinite(valence) else None), (arousal if math.isfinite(arousal) else None)
