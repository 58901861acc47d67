"""One retry policy type for every task. A failed task either retries (exponential backoff with
jitter, so a broker or database outage does not bring every worker back at the same second) or
gives up and runs its task's give-up action: fail the recording with the reason (pipeline), analyze
without words (ASR), or log and drop (rules, notify: a later pass redoes their work). Transient
failures (database or broker down) get many more attempts than anything else; a task past its
soft time limit gives up at once, since another attempt would only time out again."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis.exceptions
from celery import Task
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, OperationalError

from callpulse.settings import get_settings

if TYPE_CHECKING:
    from worker.jobs.names import TaskSpec

log = logging.getLogger(__name__)

TRANSIENT = (OperationalError, redis.exceptions.ConnectionError, BrokerError)


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float  # first backoff; doubles per attempt
    cap_s: float = 300.0
    max_retries: int = 5
    # Database or broker unavailable: this many times more attempts.
    transient_factor: int = 4

    def countdown(self, retries: int) -> float:
        """Equal jitter: between half and all of the exponential delay."""
        delay = min(self.cap_s, self.base_s * 2**retries)
        return random.uniform(delay / 2, delay)


# Pipeline stages (ingest, infer, rescore, asr): a recording waits on them.
PIPELINE = RetryPolicy(base_s=5.0)
# Rules and notify: cheap, and a later pass (final evaluation, delivery sweep) redoes them anyway.
FOLLOW_UP = RetryPolicy(base_s=2.0)


def timed_out(exc: BaseException) -> bool:
    """Past the soft time limit, also when a wrapper (a model that failed to load) carries it."""
    return isinstance(exc, SoftTimeLimitExceeded) or isinstance(exc.__cause__, SoftTimeLimitExceeded)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


# Periodic tasks of this process that found the database or broker down (one warning per outage).
_periodic_down: set[str] = set()


def run_periodic(name: str, body: Callable[[], object]) -> None:
    """The body of a beat task (delivery sweep, media sweep, retention). Its next tick is its retry,
    so a database or broker outage is one WARNING line per outage, not an ERROR with a traceback
    every interval; anything else still fails the task."""
    try:
        body()
    except Exception as exc:
        if not is_transient(exc):
            raise
        if name not in _periodic_down:
            log.warning("%s skipped: database or broker unavailable (%s); retrying every tick quietly",
                        name, type(exc).__name__)
        _periodic_down.add(name)
        return
    if name in _periodic_down:
        _periodic_down.discard(name)
        log.warning("%s ran again: the database and broker are back", name)


def retry_unless_exhausted(task: Task, exc: Exception, spec: TaskSpec) -> None:
    """Raise Celery's retry while the task's policy allows another attempt; return when the task
    should give up."""
    if timed_out(exc) or spec.retry is None:
        return
    policy = spec.retry
    transient = is_transient(exc)
    retries = task.request.retries
    if transient or retries < policy.max_retries:
        countdown = policy.countdown(retries)
        try:
            raise task.retry(exc=exc, countdown=countdown,
                             max_retries=policy.max_retries * policy.transient_factor if transient
                             else policy.max_retries)
        except Reject as refused:
            # Celery turns a retry it cannot publish (broker down) into a reject without requeue:
            # the work would be silently dropped. Keep the retry in the outbox instead, sent when
            # the broker is back, and end this message quietly.
            from worker.jobs import outbox

            outbox.keep(task.name, list(task.request.args or []), countdown, refused.reason)
            raise Ignore() from exc


def reason(exc: Exception, what: str, spec: TaskSpec) -> str:
    """Why the task gave up, as stored on the recording (at most 500 characters)."""
    if timed_out(exc):
        return (f"{what} took longer than its time limit of {spec.time_limit_s():.0f} s "
                f"({spec.time_limit_env}) and was stopped")[:500]
    return f"internal error during {what}: {type(exc).__name__}: {exc}"[:500]


def give_up_or_retry(task: Task, exc: Exception, spec: TaskSpec,
                     recording_ids: Callable[[], list[uuid.UUID]], what: str) -> None:
    """Pipeline tasks: retry, or fail the recordings with the reason."""
    # recording_ids is only called on the give-up path: while the database is down, looking them
    # up would raise again here and lose the retry.
    from worker.jobs.enqueue import enqueue
    from worker.stages.lifecycle import fail_recording

    retry_unless_exhausted(task, exc, spec)
    log.exception("%s gave up after %d retries", what, task.request.retries)
    for rec_id in recording_ids():
        enqueue(fail_recording(rec_id, reason(exc, what, spec), get_settings()))


def retry_or_drop(task: Task, exc: Exception, spec: TaskSpec, what: str) -> None:
    """Rules and notify tasks: retry, or log and drop: a broken rule must never fail a recording,
    and the final pass re-evaluates; a delivery's row is the truth, and the delivery sweep resends."""
    retry_unless_exhausted(task, exc, spec)
    log.exception("%s gave up after %d retries", what, task.request.retries)
