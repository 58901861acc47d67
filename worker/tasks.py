"""Thin Celery tasks: take ids, call a stage, enqueue follow-ups after the stage committed.
Failures are classified: transient (database/broker down) → retry with backoff; media problems
are recorded by the stage itself; anything else retries a few times, then the recording is failed
with the reason, never dropped."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import redis.exceptions
from celery import Task
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, OperationalError

from callpulse.settings import get_settings
from worker import stages
from worker.celery_app import app
from worker.tasks_rules import enqueue_rule_work

log = logging.getLogger(__name__)

TRANSIENT = (OperationalError, redis.exceptions.ConnectionError, BrokerError)
MAX_RETRIES = 5


def _backoff(retries: int) -> int:
    return int(min(300, 5 * 2**retries))


def enqueue(followups: stages.Followups) -> None:
    for rec_id in followups.ingest:
        ingest_recording.delay(str(rec_id))
    for batch in followups.infer_batches:
        infer_segments.delay([str(i) for i in batch])
    for rec_id in followups.transcribe:
        transcribe_recording.delay(str(rec_id))
    enqueue_rule_work(followups.evaluate_rules, followups.completed, followups.failed)


def _retry_unless_exhausted(task: Task, exc: Exception) -> None:
    """Raise Celery's retry while attempts remain (many more for a database or broker outage);
    return when the task should give up."""
    transient = isinstance(exc, TRANSIENT) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
    if transient or task.request.retries < MAX_RETRIES:
        raise task.retry(exc=exc, countdown=_backoff(task.request.retries), max_retries=MAX_RETRIES * 4
                         if transient else MAX_RETRIES)


def _give_up_or_retry(
    task: Task, exc: Exception, recording_ids: Callable[[], list[uuid.UUID]], stage: str
) -> None:
    # recording_ids is only called on the give-up path: while the database is down, looking them
    # up would raise again here and lose the retry.
    _retry_unless_exhausted(task, exc)
    log.exception("%s gave up after %d retries", stage, task.request.retries)
    for rec_id in recording_ids():
        enqueue(stages.fail_recording(
            rec_id, f"internal error during {stage}: {type(exc).__name__}: {exc}"[:500], get_settings()))


@app.task(bind=True, name="callpulse.ingest_recording")
def ingest_recording(self: Task, recording_id: str) -> None:
    rec_id = uuid.UUID(recording_id)
    try:
        followups = stages.ingest(rec_id, get_settings())
    except Exception as exc:
        _give_up_or_retry(self, exc, lambda: [rec_id], "ingest")
        return
    enqueue(followups)


@app.task(bind=True, name="callpulse.infer_segments")
def infer_segments(self: Task, segment_ids: list[str]) -> None:
    ids = [uuid.UUID(i) for i in segment_ids]
    try:
        enqueue(stages.infer(ids, get_settings()))
    except Exception as exc:
        _give_up_or_retry(self, exc, lambda: stages.recordings_of(ids), "inference")


@app.task(bind=True, name="callpulse.transcribe_recording")
def transcribe_recording(self: Task, recording_id: str) -> None:
    """Our own ASR before inference. Unlike the other stages, giving up never fails the call: it is
    analyzed without words (worker/asr_stage.py)."""
    from worker import asr_stage

    rec_id = uuid.UUID(recording_id)
    try:
        followups = asr_stage.transcribe_recording(rec_id, get_settings())
    except Exception as exc:
        _retry_unless_exhausted(self, exc)
        log.exception("ASR gave up after %d retries", self.request.retries)
        followups = asr_stage.continue_without_words(
            rec_id, get_settings(), f"ASR failed: {type(exc).__name__}: {exc}"[:500])
    enqueue(followups)


@app.task(bind=True, name="callpulse.rescore_recording")
def rescore_recording(self: Task, recording_id: str, force: bool = False,
                      expected_round: int | None = None, rerun_rules: bool = False) -> None:
    from worker.rescore import rescore

    rec_id = uuid.UUID(recording_id)
    try:
        followups = rescore(rec_id, get_settings(), force, expected_round, rerun_rules)
    except Exception as exc:
        # Giving up leaves the recording as it was (its earlier predictions stand): nothing to fail.
        _give_up_or_retry(self, exc, lambda: [], "rescoring")
        return
    enqueue(followups)


@app.task(name="callpulse.sweep_stuck_recordings")
def sweep_stuck_recordings() -> None:
    enqueue(stages.sweep(get_settings()))


@app.task(name="callpulse.apply_retention")
def apply_retention() -> None:
    # No retry: the next beat tick is the retry, and each batch it finished is already committed.
    from worker.retention import apply_retention as run

    run(get_settings())
