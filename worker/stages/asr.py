"""The `asr` stage body: a call uploaded without a transcript gets one from our own Whisper model
between segmentation and its first inference (ingest hands it over instead of enqueueing inference,
see lifecycle.waits_for_asr), so the text model sees its words. Like every stage it takes an id, locks
the row, does only what is missing and returns what to enqueue after its commit: always the call's
inference, with words or, when ASR cannot be had, without them. A call never fails because of ASR.

Shared by the Celery task (worker/jobs/asr.py) and `callpulse analyze` (on by default)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from callpulse.settings import Settings
from db.models import Recording, RecordingStatus, Segment, utcnow
from db.queries import pipeline as q
from db.queries.corrections import get_transcript, put_transcript
from db.session import transaction
from worker import runtime
from worker.pipeline.media import audio_store, decode
from worker.pipeline.speech import asr
from worker.stages.lifecycle import Followups, batches

log = logging.getLogger(__name__)

FORMAT = "asr"  # transcript.format of our own transcripts (source "asr")
TOUCH_EVERY_S = 60.0  # how often a long transcription tells the sweep it is still moving


@dataclass(frozen=True)
class _Job:
    """What the transcription needs of the recording, as plain values (no ORM object leaves the
    transaction)."""

    media_uri: str
    cache: Path
    channel_roles: dict[int, str]
    language: str | None
    speech: list[asr.Span]


def transcribe_recording(recording_id: uuid.UUID, settings: Settings) -> Followups:
    """Write the recording's ASR transcript if it still has none, then hand it to inference.
    Raises on transient trouble (database, a crash inside the model) so the task retries; a model
    that cannot be loaded is not retried: the call goes on without words."""
    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is None or RecordingStatus(rec.status).is_final:
            return Followups()
        if rec.status != RecordingStatus.segmented.value:
            return Followups()  # inference already began (a duplicate message): its words are moot
        if get_transcript(s, rec.id) is not None:
            # The client's transcript (PUT while the call waited) or a duplicate run's: words exist.
            return _inference(s, rec, settings)
        if not settings.asr_enabled:
            log.warning("recording %s was queued for ASR but CALLPULSE_ASR_ENABLED is off on this "
                        "worker: analyzing it without words", rec.id)
            return _inference(s, rec, settings)
        # Counted per start, after ingest's own starts, like ingest: a call whose transcription keeps
        # killing its worker (the message returns by reject_on_worker_lost) goes on without words.
        rec.attempts += 1
        if rec.attempts > settings.max_attempts:
            log.error("ASR of recording %s was started %d times without finishing; analyzing it "
                      "without words", rec.id, settings.max_attempts)
            return _inference(s, rec, settings)
        rec.updated_at = utcnow()
        job = _job(s, rec, settings)

    try:
        model = runtime.asr_model(settings)
    except asr.AsrUnavailable as exc:
        return continue_without_words(recording_id, settings, exc.args[0] if exc.args else str(exc))
    try:
        audio = audio_store.load_or_decode(job.cache, job.media_uri, settings.sample_rate)
    except (decode.MediaError, FileNotFoundError) as exc:
        # Not ASR's to judge: inference meets the same media and records the reason on the call.
        return continue_without_words(recording_id, settings, f"its audio did not load: {exc}")
    started = time.monotonic()
    toucher = _Toucher(recording_id)
    if isinstance(model, asr.AsrModel):  # a transformers checkpoint (GPU workers)
        rows = asr.transcribe(model, audio, job.channel_roles, speech=job.speech, language=job.language,
                              batch_size=settings.asr_batch_size, progress=toucher)
    else:
        rows = model.transcribe(audio, job.channel_roles, speech=job.speech, language=job.language,
                                batch_size=settings.asr_batch_size, progress=toucher)
    log.info("ASR of recording %s: %d utterances from %.0f s of audio in %.1f s (%s)", recording_id,
             len(rows), audio.duration_s, time.monotonic() - started, model.version)

    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is None or RecordingStatus(rec.status).is_final:
            return Followups()
        # A client's transcript stored while we listened wins; so does a concurrent duplicate run's.
        if get_transcript(s, rec.id) is None:
            put_transcript(s, rec.id, FORMAT, rows, source="asr")
        if rec.status != RecordingStatus.segmented.value:
            return Followups()
        return _inference(s, rec, settings)


def continue_without_words(recording_id: uuid.UUID, settings: Settings, reason: str) -> Followups:
    """ASR gave up for good: the call is analyzed by voice (and video) alone, never lost."""
    log.error("no ASR transcript for recording %s (%s): analyzing it without words", recording_id, reason)
    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is None or RecordingStatus(rec.status).is_final:
            return Followups()
        if rec.status != RecordingStatus.segmented.value:
            return Followups()
        return _inference(s, rec, settings)


def _inference(s: Session, rec: Recording, settings: Settings) -> Followups:
    """What ingest would have enqueued: every analyzable segment (the infer task itself skips those
    its model version already scored, so this worker never needs the emotion model loaded)."""
    ids = list(s.scalars(select(Segment.id).where(Segment.recording_id == rec.id, Segment.analyzed.is_(True))
                         .order_by(Segment.index)))
    rec.updated_at = utcnow()
    return Followups(infer_batches=batches(ids, settings.infer_batch_size))


def _job(s: Session, rec: Recording, settings: Settings) -> _Job:
    segments = s.execute(select(Segment.channel, Segment.start_s, Segment.end_s)
                         .where(Segment.recording_id == rec.id).order_by(Segment.start_s))
    return _Job(
        media_uri=rec.media_uri,
        cache=audio_store.cache_path(settings.resolved_media_dir, rec.tenant_id, rec.id),
        channel_roles={int(k): v for k, v in (rec.channel_roles or {}).items()},
        # The recording's own language (upload metadata) beats the deployment's default.
        language=rec.language or settings.asr_language,
        # Only where VAD found speech (every role: the transcript is the whole call's).
        speech=[asr.Span(int(ch), float(a), float(b)) for ch, a, b in segments],
    )


class _Toucher:
    """Progress callback: bumps recording.updated_at now and then, so the sweep does not re-drive
    a long call's transcription while it is still running."""

    def __init__(self, recording_id: uuid.UUID) -> None:
        self.recording_id = recording_id
        self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if done >= total or time.monotonic() - self.last < TOUCH_EVERY_S:
            return
        self.last = time.monotonic()
        with transaction() as s:
            s.execute(update(Recording).where(Recording.id == self.recording_id).values(updated_at=utcnow()))
