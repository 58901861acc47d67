"""What the infer stage hands a model for each segment: the audio slice, the speaker's baselines,
the transcript words said inside it and, for video recordings, frames sampled inside it.

Split in two halves around the stage's transactions: `load_source` reads a recording's rows inside
the first transaction; `build_inputs` reads audio and video with no transaction or lock held."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.orm import Session

from callpulse.settings import Settings
from db.models import Recording, Segment, Tenant
from db.queries import pipeline as q
from db.queries.corrections import get_transcript
from worker.pipeline.contracts import Acoustics, DecodedAudio, EmotionModel, SegmentInput, VideoFrame, Word
from worker.pipeline.media import audio_store
from worker.pipeline.speech import prosody
from worker.pipeline.text.transcript_index import TranscriptIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """One segment to run, as plain values (no ORM object leaves the transaction)."""

    segment_id: uuid.UUID
    recording_id: uuid.UUID
    channel: int
    start_s: float
    end_s: float
    role: str
    speaker: str
    acoustics: dict[str, Any]


@dataclass
class Source:
    """What the infer stage needs of a recording once its first transaction has ended."""

    media_uri: str
    cache: Path
    has_video: bool
    baselines: dict[str, Acoustics]
    transcript: TranscriptIndex | None
    # The audio model's per-speaker references for its version; speakers still lacking one map to
    # the (channel, start_s, end_s) of up to N of their segments spread over the call.
    references: dict[str, dict[str, Any]]
    reference_spans: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    new_references: dict[str, dict[str, Any]] = field(default_factory=dict)
    language: str | None = None  # the upload's `language`, for words our ASR did not tag
    prior: str = "balanced"  # the tenant's class-prior preset


def audio_version(model: EmotionModel) -> str:
    """Speaker references belong to the audio model's feature space, not to the text/face heads."""
    return str(getattr(getattr(model, "audio", model), "version", model.version))


def wants_frames(model: EmotionModel) -> bool:
    """Frames are sampled for the face model (when it is on and installed), or for an audio+video
    backend (omni with an image processor)."""
    audio = getattr(model, "audio", model)
    return getattr(model, "face", None) is not None or bool(getattr(audio, "uses_frames", False))


def load_source(s: Session, rec: Recording, settings: Settings, model: EmotionModel,
                speakers: set[str], cache: Path) -> Source:
    baselines = {speaker: prosody.baseline(items)  # type: ignore[arg-type]
                 for speaker, items in q.speaker_acoustics(s, rec.id).items()}
    words: TranscriptIndex | None = None
    if settings.text_model_enabled:
        row = get_transcript(s, rec.id)
        if row is not None:
            words = TranscriptIndex.from_rows(row.utterances)
    references = dict((rec.speaker_references or {}).get(audio_version(model), {}))
    spans: dict[str, list[tuple[int, float, float]]] = {}
    if getattr(model, "uses_speaker_reference", hasattr(model, "speaker_reference")):
        for speaker in sorted(speakers - set(references)):
            spans[speaker] = _spread_spans(s, rec.id, speaker, settings.speaker_reference_segments)
    tenant = s.get(Tenant, rec.tenant_id)
    return Source(rec.media_uri, cache, bool(rec.has_video), baselines, words, references, spans,
                  language=rec.language, prior=tenant.emotion_prior if tenant is not None else "balanced")


def _spread_spans(s: Session, recording_id: uuid.UUID, speaker: str, limit: int) -> list[
    tuple[int, float, float]
]:
    """Up to `limit` of the speaker's segments evenly spread over the call (the whole call, not its
    start: a caller who opens angry should not become their own neutral)."""
    rows = list(s.execute(
        select(Segment.channel, Segment.start_s, Segment.end_s)
        .where(Segment.recording_id == recording_id, Segment.speaker == speaker)
        .order_by(Segment.start_s)
    ))
    if len(rows) > limit:
        picks = np.linspace(0, len(rows) - 1, limit).round().astype(int)
        rows = [rows[int(i)] for i in sorted(set(picks.tolist()))]
    return [(int(c), float(a), float(b)) for c, a, b in rows]


def build_inputs(plans: list[Plan], sources: dict[uuid.UUID, Source], settings: Settings,
                 model: EmotionModel, face_frames: bool, borrowed: frozenset[uuid.UUID] = frozenset()
                 ) -> tuple[list[SegmentInput], list[uuid.UUID]]:
    """``borrowed``: recordings whose segments only joined to fill the batch (dynamic batching).
    Their audio failing to load skips them (their own task meets and records the problem) rather
    than failing the recording the task is for."""
    audio_by_rec: dict[uuid.UUID, DecodedAudio | None] = {}
    inputs, keys = [], []
    count = frame_count(model, settings)
    for plan in plans:
        source = sources[plan.recording_id]
        if plan.recording_id not in audio_by_rec:
            try:
                audio_by_rec[plan.recording_id] = audio_store.load_or_decode(
                    source.cache, source.media_uri, settings.sample_rate)
            except SoftTimeLimitExceeded:
                raise  # the task's time is up
            except Exception:
                if plan.recording_id not in borrowed:
                    raise
                log.warning("skipping borrowed recording %s: its audio did not load", plan.recording_id,
                            exc_info=True)
                audio_by_rec[plan.recording_id] = None
            loaded = audio_by_rec[plan.recording_id]
            if loaded is not None:
                _make_references(source, loaded, model)
        audio = audio_by_rec[plan.recording_id]
        if audio is None:
            continue
        words = source.transcript.words(plan.start_s, plan.end_s, plan.channel) if source.transcript else []
        inputs.append(SegmentInput(
            key=str(plan.segment_id),
            audio=audio_store.slice_mono(audio, plan.channel, plan.start_s, plan.end_s),
            sample_rate=audio.sample_rate,
            start_s=plan.start_s,
            end_s=plan.end_s,
            role=plan.role,
            baseline=source.baselines.get(plan.speaker),
            acoustics=cast(Acoustics, plan.acoustics) if plan.acoustics else None,
            speaker_reference=_reference_for(source, plan),
            words=words,
            language=_language(words, source.language),
            prior=source.prior,
            frames=_frames(source, plan, count) if face_frames and source.has_video else [],
        ))
        keys.append(plan.segment_id)
    return inputs, keys


def _language(words: list[Word], uploaded: str | None) -> str | None:
    """The language most of the segment's words were heard in, else the upload's."""
    heard = [w.language for w in words if w.language]
    if heard:
        return max(set(heard), key=heard.count)
    return uploaded.strip().lower().replace("_", "-").split("-")[0] if uploaded else None


def _make_references(source: Source, audio: DecodedAudio, model: EmotionModel) -> None:
    make = getattr(model, "speaker_reference", None)
    if make is None or not getattr(model, "uses_speaker_reference", True):
        return
    for speaker, spans in source.reference_spans.items():
        clips = [audio_store.slice_mono(audio, channel, a, b) for channel, a, b in spans]
        if not clips:
            continue
        try:
            reference = make(clips, audio.sample_rate)
        except SoftTimeLimitExceeded:
            raise  # the task's time is up
        except Exception:  # the raw-feature head still answers; never fail the batch for this
            log.exception("no speaker reference for %s", speaker)
            continue
        if reference is not None:
            # Which segments it summarises: each is later scored against the others only.
            reference["spans"] = [[round(a, 3), round(b, 3)] for _, a, b in spans]
            source.references[speaker] = reference
            source.new_references[speaker] = reference


def _reference_for(source: Source, plan: Plan) -> dict[str, Any] | None:
    reference = source.references.get(plan.speaker)
    if reference is None:
        return None
    if [round(plan.start_s, 3), round(plan.end_s, 3)] in reference.get("spans", []):
        return {**reference, "includes_segment": True}
    return reference


def frame_count(model: EmotionModel, settings: Settings) -> int:
    """Frames per segment: what an audio+video backend was trained on (r1-omni: 8), else the
    setting (face model, omni)."""
    wanted = getattr(getattr(model, "audio", model), "frames_per_segment", None)
    return int(wanted) if wanted else settings.frames_per_segment


def _frames(source: Source, plan: Plan, count: int) -> list[VideoFrame]:
    from worker.pipeline.face import expression as face

    try:
        return face.sample_frames(Path(source.media_uri), plan.start_s, plan.end_s,
                                  count=count)
    except SoftTimeLimitExceeded:
        raise  # the task's time is up
    except Exception as exc:  # FrameError, a missing ffprobe, odd metadata: never fail the batch
        # Voice (and words) still decide; the reasoning simply has no face evidence.
        log.warning("no frames for segment %s: %s", plan.segment_id, exc)
        return []


def store_references(rec: Recording, model: EmotionModel, new: dict[str, dict[str, Any]]) -> None:
    """Merge freshly made speaker references into the recording (inside the final transaction)."""
    if not new:
        return
    version = audio_version(model)
    refs = dict(rec.speaker_references or {})
    refs[version] = {**refs.get(version, {}), **new}
    rec.speaker_references = refs  # a new dict: the JSON column sees the change
