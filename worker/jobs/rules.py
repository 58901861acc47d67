"""Task of the ``rules`` queue (routed by its ``callpulse.rules.*`` name): evaluate a recording's
escalation rules. Deliberately free of the pipeline's imports, so a rules worker stays small."""

from __future__ import annotations

import uuid

from celery import Task

from worker.jobs import names
from worker.jobs.app import app
from worker.jobs.enqueue import enqueue_deliveries
from worker.jobs.retry import retry_or_drop
from worker.stages import rules as rule_stages


@app.task(bind=True, **names.EVALUATE.options())
def evaluate_recording(self: Task, recording_id: str, final: bool = False) -> None:
    try:
        deliveries = rule_stages.evaluate_recording(uuid.UUID(recording_id), final)
    except Exception as exc:
        retry_or_drop(self, exc, names.EVALUATE, f"rule evaluation of {recording_id}")
        return
    enqueue_deliveries(deliveries)
