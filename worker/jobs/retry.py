"""How a failed task decides between retrying and giving up. Transient failures (database or broker
down) retry with backoff for much longer than anything else; the pipeline's give-up path fails the
recording with the reason, so a call is never silently dropped."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import redis.exceptions
from celery import Task
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, OperationalError

from callpulse.settings import get_settings

log = logging.getLogger(__name__)

TRANSIENT = (OperationalError, redis.exceptions.ConnectionError, BrokerError)
MAX_RETRIES = 5


def is_transient(exc: Exception) -> bool:
    return isinstance(exc, TRANSIENT) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def _backoff(retries: int) -> int:
    return int(min(300, 5 * 2**retries))


def retry_unless_exhausted(task: Task, exc: Exception) -> None:
    """Raise Celery's retry while attempts remain (many more for a database or broker outage);
    return when the task should give up."""
    transient = is_transient(exc)
    if transient or task.request.retries < MAX_RETRIES:
        raise task.retry(exc=exc, countdown=_backoff(task.request.retries), max_retries=MAX_RETRIES * 4
                         if transient else MAX_RETRIES)


def give_up_or_retry(
    task: Task, exc: Exception, recording_ids: Callable[[], list[uuid.UUID]], stage: str
) -> None:
    # recording_ids is only called on the give-up path: while the database is down, looking them
    # up would raise again here and lose the retry.
    from worker.jobs.enqueue import enqueue
    from worker.stages.lifecycle import fail_recording

    retry_unless_exhausted(task, exc)
    log.exception("%s gave up after %d retries", stage, task.request.retries)
    for rec_id in recording_ids():
        enqueue(fail_recording(
            rec_id, f"internal error during {stage}: {type(exc).__name__}: {exc}"[:500], get_settings()))


def retry_or_drop(task: Task, exc: Exception, what: str) -> None:
    """Rules and notify tasks: database or broker down → retry with backoff for long; anything else
    → a few retries, then logged and dropped: a broken rule must never fail a recording, and the
    final pass re-evaluates."""
    transient = is_transient(exc)
    if transient or task.request.retries < MAX_RETRIES:
        raise task.retry(exc=exc, countdown=min(300, 2 * 2 ** task.request.retries),
                         max_retries=MAX_RETRIES * 4 if transient else MAX_RETRIES)
    log.exception("%s gave up after %d retries", what, task.request.retries)
