"""What every pipeline stage shares: the follow-ups a stage returns (enqueued only after it has
committed), the one way a recording becomes done or failed, and resuming a segmented recording's
inference. Stage bodies are boundaries: each owns its transactions, takes ids, locks the recording
row and does only what is missing; Celery tasks (worker/jobs) and `callpulse analyze` both call them."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from callpulse.settings import Settings
from db.models import Recording, RecordingStatus
from db.queries import pipeline as q
from db.queries.analytics import write_emotion_rollup
from db.queries.corrections import get_transcript
from db.session import transaction
from worker import conversation
from worker.pipeline.media import audio_store

log = logging.getLogger(__name__)


@dataclass
class Followups:
    """Work to enqueue once the stage has committed."""

    ingest: list[uuid.UUID] = field(default_factory=list)
    infer_batches: list[list[uuid.UUID]] = field(default_factory=list)
    # Finished recordings: a final rule evaluation, which also publishes recording.completed.
    completed: list[uuid.UUID] = field(default_factory=list)
    # Recordings that got new predictions: evaluate their rules now, while the call is analyzed.
    evaluate_rules: list[uuid.UUID] = field(default_factory=list)
    # Recordings that failed: publish recording.failed.
    failed: list[uuid.UUID] = field(default_factory=list)
    # Recordings whose words come from our own ASR before inference (worker/stages/asr.py).
    transcribe: list[uuid.UUID] = field(default_factory=list)
    # Stuck recordings for the infer side to decide on with its own model version
    # (worker/stages/infer.py, resume): only the worker that runs the model knows what is missing.
    resume: list[uuid.UUID] = field(default_factory=list)


def batches(ids: list[uuid.UUID], size: int) -> list[list[uuid.UUID]]:
    return [ids[i: i + size] for i in range(0, len(ids), max(1, size))]


def cache_path(settings: Settings, rec: Recording) -> Path:
    return audio_store.cache_path(settings.resolved_media_dir, rec.tenant_id, rec.id)


def fail_recording(recording_id: uuid.UUID, reason: str, settings: Settings) -> Followups:
    """Record a final failure with its reason (used when a stage gives up)."""
    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is None or RecordingStatus(rec.status).is_final:
            return Followups()
        q.set_status(rec, RecordingStatus.failed, reason)
        cache = cache_path(settings, rec)
    audio_store.drop_cache(cache)
    return Followups(failed=[recording_id])


def resume_inference(s: Session, rec: Recording, settings: Settings) -> Followups:
    """A segmented recording's next step, decided without the emotion model: every analyzable
    segment goes to inference (the infer task skips those its own model version already scored),
    or to ASR first; with nothing analyzable the call is done at once."""
    analyzable = q.analyzable_segment_ids(s, rec.id)
    if not analyzable:
        followups = Followups()
        audio_store.drop_cache(complete(s, rec, settings, followups))
        return followups
    if waits_for_asr(s, rec, settings):
        return Followups(transcribe=[rec.id])  # the asr stage enqueues this inference after it
    return Followups(infer_batches=batches(analyzable, settings.infer_batch_size))


def waits_for_asr(s: Session, rec: Recording, settings: Settings) -> bool:
    """Words before emotion: with our own ASR on, a call the client sent no transcript for is
    transcribed before its first inference (status still segmented); once inference has begun,
    the words would come too late for it."""
    return (settings.asr_enabled and rec.status == RecordingStatus.segmented.value
            and get_transcript(s, rec.id) is None)


def complete(s: Session, rec: Recording, settings: Settings, followups: Followups) -> Path:
    """The one way a recording becomes done: with its analytics rollup in the same transaction and
    its completion follow-up. Returns the decoded cache, to drop once nothing reads it."""
    q.set_status(rec, RecordingStatus.done)
    write_emotion_rollup(s, rec.id)
    # Stored with the final status: analytics average it, recording.completed carries it.
    rec.conversation = conversation.measure_recording(s, rec)
    followups.completed.append(rec.id)
    return cache_path(settings, rec)


def recordings_of(segment_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    with transaction() as s:
        return q.recordings_of_segments(s, segment_ids)
