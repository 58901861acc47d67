"""Request and response bodies of the public API (the OpenAPI contract integrators code against)."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from api.schemas_quality import CorrectionOut, LastRescore, WordOut
from db.models import Prediction, Recording, RecordingStatus, Segment, SegmentLabel
from worker.pipeline.contracts import Word
from worker.pipeline.text.transcript_index import TranscriptIndex

MAX_CHANNELS = 8
ROLE_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def check_storable(value: Any, where: str) -> None:
    """Postgres text and JSONB refuse NUL characters and NaN/Infinity: refuse them up front (422)
    rather than let the INSERT fail (500)."""
    # An explicit stack, not recursion: thousands of nesting levels must get a 422, not a
    # RecursionError (500). Children are pushed in reverse so the first problem found is the same.
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise ValueError(f"{where} contains a NUL character")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"{where} contains a non-finite number (NaN or Infinity)")
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                stack += [(item, f"{where}.{key}"), (key, where)]
        elif isinstance(value, list):
            stack += [(item, f"{where}[{index}]") for index, item in reversed(list(enumerate(value)))]


class UploadMetadata(BaseModel):
    """The JSON object sent in the ``metadata`` form field of an upload."""

    # A misspelt key (``externalId``) must fail loudly, not silently drop idempotency.
    model_config = ConfigDict(extra="forbid")

    external_id: str | None = Field(
        default=None, min_length=1, max_length=255,
        description="Your id for the call; re-sending it returns the existing recording.",
    )
    channel_roles: dict[str, str] = Field(
        default_factory=dict,
        description='Speaker role per audio channel index, e.g. {"0": "agent", "1": "customer"}.',
    )
    language: str | None = Field(default=None, min_length=1, max_length=32)
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free key/values kept with the call.")

    @field_validator("external_id", "language", "metadata")
    @classmethod
    def _check_storable(cls, value: Any, info: ValidationInfo) -> Any:
        check_storable(value, str(info.field_name))
        return value

    @field_validator("channel_roles")
    @classmethod
    def _check_channel_roles(cls, value: dict[str, str]) -> dict[str, str]:
        roles: dict[str, str] = {}
        for key, role in value.items():
            if not (key.isascii() and key.isdigit()) or int(key) >= MAX_CHANNELS:
                raise ValueError(f"channel '{key}' is not a channel index 0..{MAX_CHANNELS - 1}")
            normalised = role.strip().lower()
            if not ROLE_PATTERN.match(normalised):
                raise ValueError(
                    f"role '{role}' for channel {key} must be 1-32 characters: a letter, then letters, "
                    "digits, '_' or '-'"
                )
            # str(int(...)) so "01" and "1" cannot name the same channel twice.
            roles[str(int(key))] = normalised
        return roles


class RecordingAccepted(BaseModel):
    id: uuid.UUID
    status: RecordingStatus
    status_url: str
    timeline_url: str
    external_id: str | None
    created_at: datetime


class Progress(BaseModel):
    segments_done: int = Field(description="Analyzed segments that have an emotion prediction.")
    segments_total: int = Field(description="Segments the tenant's policy sends to the model.")


class RoleCountsOut(BaseModel):
    segments: int
    analyzed: int
    predicted: int


class RecordingSummary(BaseModel):
    id: uuid.UUID
    external_id: str | None
    status: RecordingStatus
    error: str | None
    filename: str
    duration_s: float | None
    channels: int
    has_video: bool
    language: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    status_url: str


class RecordingDetail(RecordingSummary):
    channel_roles: dict[str, str]
    metadata: dict[str, Any]
    size_bytes: int
    container: str
    progress: Progress
    role_counts: dict[str, RoleCountsOut] = Field(description="Segment counts per speaker role.")
    timeline_url: str
    last_rescore: LastRescore | None = Field(None, description="What the newest POST …/rescore found, "
                                             "e.g. that there was nothing to do")
    media_deleted_at: datetime | None = Field(None, description="When retention removed the media "
                                              "(the analysis stays until the data itself expires)")
    disconnected: bool = Field(default=False, description=(
        "A live call whose socket dropped before its stop message; what arrived was analyzed."))
    conversation: dict[str, Any] | None = Field(default=None, description=(
        "Conversation measures: `talk` (seconds and share of the call per role), `non_talk` (silences "
        "over 2 s with start/end, total and share), `interruptions` (count, overtalk seconds, each with "
        "its time, who interrupted whom), `talk_speed` (words per minute, or syllables per second "
        "without a transcript), `loudness` (each turn in dB against its role's median turn), "
        "`sentiment` (the customer's -5..+5 overall, per quarter of the call, and the trend). "
        "docs/CONVERSATION.md. Null before segmentation."))


class RecordingPage(BaseModel):
    items: list[RecordingSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class ModelRef(BaseModel):
    name: str
    version: str


class EvidenceItem(BaseModel):
    """One reason behind a label at absolute call time (see worker.pipeline.contracts.Evidence)."""

    start_s: float
    end_s: float
    modality: str
    cue: str
    value: float | str | None = None
    text: str = ""
    box: list[int] | None = Field(default=None, description="Face evidence: x, y, width, height in pixels.")
    label: str | None = Field(default=None, description="Face or text evidence: the label it points to.")
    words: str | None = Field(default=None, description="Text evidence: the words quoted.")


class TimelineSegment(BaseModel):
    id: uuid.UUID
    index: int
    role: str
    speaker: str
    channel: int
    start_s: float
    end_s: float
    analyzed: bool
    skip_reason: str | None = Field(description="Why the segment has no emotion (e.g. role policy).")
    # Null until the segment has a prediction (or forever when it is not analyzed).
    label: str | None = None
    scores: dict[str, float] | None = None
    valence: float | None = None
    arousal: float | None = None
    confidence: float | None = None
    model: ModelRef | None = None
    reasoning: list[EvidenceItem] | None = None
    reasoning_text: str | None = None
    uncertain: bool | None = Field(default=None, description="Confidence below the uncertainty setting.")
    modalities: dict[str, Any] | None = Field(
        default=None, description="Each modality's own answer (audio, text, video) behind the fused label.")
    words: list[WordOut] = Field(default_factory=list, description="Transcript words inside the segment.")
    correction: CorrectionOut | None = Field(default=None, description="A supervisor's true label.")

    @classmethod
    def build(cls, segment: Segment, prediction: Prediction | None, words: Sequence[Word] = (),
              correction: SegmentLabel | None = None) -> TimelineSegment:
        out = cls(
            id=segment.id, index=segment.index, role=segment.role, speaker=segment.speaker,
            channel=segment.channel, start_s=segment.start_s, end_s=segment.end_s,
            analyzed=segment.analyzed, skip_reason=segment.skip_reason,
            words=[WordOut.build(w) for w in words],
            correction=CorrectionOut.build(correction) if correction is not None else None,
        )
        if prediction is not None:
            out.label = prediction.label
            out.scores = prediction.scores
            out.valence = prediction.valence
            out.arousal = prediction.arousal
            out.confidence = prediction.confidence
            out.model = ModelRef(name=prediction.model_name, version=prediction.model_version)
            out.reasoning = [EvidenceItem.model_validate(item) for item in prediction.reasoning or []]
            out.reasoning_text = prediction.reasoning_text
            out.uncertain = prediction.uncertain
            out.modalities = prediction.modalities or None
        return out


class Timeline(BaseModel):
    """The timeline endpoint's body; `callpulse analyze --format json` prints the same fields."""

    recording_id: uuid.UUID
    status: RecordingStatus
    duration_s: float | None
    language: str | None = Field(default=None, description="The call's language: the upload's `language`, "
                                 "else the one our ASR heard most.")
    transcript_source: Literal["upload", "asr"] | None = Field(
        default=None, description="Where the words come from: the client's transcript or our ASR; null "
        "when the call has none.")
    segments: list[TimelineSegment]

    @classmethod
    def build(cls, rec: Recording, rows: Sequence[tuple[Segment, Prediction | None]],
              words: TranscriptIndex | None = None, labels: Mapping[uuid.UUID, SegmentLabel] | None = None,
              transcript_source: Literal["upload", "asr"] | None = None, language: str | None = None,
              ) -> Timeline:
        labels = labels or {}
        return cls(recording_id=rec.id, status=RecordingStatus(rec.status), duration_s=rec.duration_s,
                   language=rec.language or language, transcript_source=transcript_source,
                   segments=[TimelineSegment.build(
                       seg, pred,
                       words.words(seg.start_s, seg.end_s, seg.channel) if words else (),
                       labels.get(seg.id),
                   ) for seg, pred in rows])


class ComponentCheck(BaseModel):
    ok: bool
    detail: str = ""


class Readiness(BaseModel):
    status: str
    checks: dict[str, ComponentCheck]


class ErrorOut(BaseModel):
    """Shape of every error body (validation errors carry a list of field problems instead)."""

    detail: str | list[dict[str, Any]]
