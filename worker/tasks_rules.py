"""Thin tasks of the ``rules`` and ``notify`` queues (routed by their ``callpulse.rules.*`` and
``callpulse.notify.*`` names). Deliberately free of the pipeline's imports, so the API can enqueue
deliveries without loading torch and the models."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

import redis.exceptions
from celery import Task
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError, OperationalError

from callpulse.settings import get_settings
from worker import rule_stages
from worker.celery_app import app

log = logging.getLogger(__name__)

EVALUATE_TASK = "callpulse.rules.evaluate_recording"
PUBLISH_TASK = "callpulse.notify.publish_recording_event"
DELIVER_TASK = "callpulse.notify.deliver"
SWEEP_TASK = "callpulse.notify.sweep_deliveries"
TRANSIENT = (OperationalError, redis.exceptions.ConnectionError, BrokerError)
MAX_RETRIES = 5


def enqueue_deliveries(delivery_ids: Iterable[uuid.UUID], countdown: float | None = None) -> None:
    for delivery_id in delivery_ids:
        try:
            app.send_task(DELIVER_TASK, args=[str(delivery_id)], countdown=countdown)
        except Exception:
            # The delivery row is committed as pending: the delivery sweep sends it later.
            log.warning("could not enqueue webhook delivery %s; the sweep will retry", delivery_id,
                        exc_info=True)


def enqueue_rule_work(evaluate: Iterable[uuid.UUID], completed: Iterable[uuid.UUID],
                      failed: Iterable[uuid.UUID]) -> None:
    """Follow-ups of the pipeline stages: evaluate recordings that got predictions, a final pass
    (which publishes recording.completed) for finished ones, recording.failed for failed ones."""
    done = list(completed)
    for rec_id in done:
        app.send_task(EVALUATE_TASK, args=[str(rec_id), True])
    for rec_id in evaluate:
        if rec_id not in done:  # the final pass covers it
            app.send_task(EVALUATE_TASK, args=[str(rec_id), False])
    for rec_id in failed:
        app.send_task(PUBLISH_TASK, args=[str(rec_id), "recording.failed"])


def _retry(task: Task, exc: Exception, what: str) -> None:
    """Database or broker down → retry with backoff for long; anything else → a few retries, then
    logged and dropped: a broken rule must never fail a recording, and the final pass re-evaluates."""
    transient = isinstance(exc, TRANSIENT) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
    if transient or task.request.retries < MAX_RETRIES:
        raise task.retry(exc=exc, countdown=min(300, 2 * 2 ** task.request.retries),
                         max_retries=MAX_RETRIES * 4 if transient else MAX_RETRIES)
    log.exception("%s gave up after %d retries", what, task.request.retries)


@app.task(bind=True, name=EVALUATE_TASK)
def evaluate_recording(self: Task, recording_id: str, final: bool = False) -> None:
    try:
        deliveries = rule_stages.evaluate_recording(uuid.UUID(recording_id), final)
    except Exception as exc:
        _retry(self, exc, f"rule evaluation of {recording_id}")
        return
    enqueue_deliveries(deliveries)


@app.task(bind=True, name=PUBLISH_TASK)
def publish_recording_event(self: Task, recording_id: str, event_type: str) -> None:
    try:
        deliveries = rule_stages.publish_recording_event(uuid.UUID(recording_id), event_type)
    except Exception as exc:
        _retry(self, exc, f"publishing {event_type} of {recording_id}")
        return
    enqueue_deliveries(deliveries)


@app.task(bind=True, name=DELIVER_TASK)
def deliver(self: Task, delivery_id: str) -> None:
    # Receiver failures are not exceptions: the stage logs the attempt and says when to try again.
    try:
        delay = rule_stages.deliver(uuid.UUID(delivery_id), get_settings())
    except Exception as exc:
        _retry(self, exc, f"webhook delivery {delivery_id}")
        return
    if delay is not None:
        # A new message rather than task.retry: the row (next_attempt_at) is the truth, and the
        # delivery sweep re-sends it if this message is lost.
        enqueue_deliveries([uuid.UUID(delivery_id)], countdown=delay)


@app.task(name=SWEEP_TASK)
def sweep_deliveries() -> None:
    enqueue_deliveries(rule_stages.overdue_deliveries(get_settings()))
