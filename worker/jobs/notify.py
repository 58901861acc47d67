"""Tasks of the ``notify`` queue (routed by their ``callpulse.notify.*`` names): publish recording
events, deliver webhooks, and re-send deliveries whose delayed message was lost. Free of the
pipeline's imports."""

from __future__ import annotations

import uuid

from celery import Task

from callpulse.settings import get_settings
from worker.jobs import names
from worker.jobs.app import app
from worker.jobs.enqueue import enqueue_deliveries
from worker.jobs.retry import retry_or_drop, run_periodic
from worker.stages import notify as notify_stages


@app.task(bind=True, **names.PUBLISH.options())
def publish_recording_event(self: Task, recording_id: str, event_type: str) -> None:
    try:
        deliveries = notify_stages.publish_recording_event(uuid.UUID(recording_id), event_type)
    except Exception as exc:
        retry_or_drop(self, exc, names.PUBLISH, f"publishing {event_type} of {recording_id}")
        return
    enqueue_deliveries(deliveries)


@app.task(bind=True, **names.DELIVER.options())
def deliver(self: Task, delivery_id: str) -> None:
    # Receiver failures are not exceptions: the stage logs the attempt and says when to try again.
    try:
        delay = notify_stages.deliver(uuid.UUID(delivery_id), get_settings())
    except Exception as exc:
        retry_or_drop(self, exc, names.DELIVER, f"webhook delivery {delivery_id}")
        return
    if delay is not None:
        # A new message rather than task.retry: the row (next_attempt_at) is the truth, and the
        # delivery sweep re-sends it if this message is lost.
        enqueue_deliveries([uuid.UUID(delivery_id)], countdown=delay)


@app.task(**names.SWEEP_DELIVERIES.options())
def sweep_deliveries() -> None:
    def body() -> None:
        settings = get_settings()
        enqueue_deliveries(notify_stages.overdue_deliveries(settings))
        enqueue_deliveries(notify_stages.resumable_deliveries(settings))

    run_periodic("webhook delivery sweep", body)
