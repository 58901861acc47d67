"""Sending follow-ups: what a stage returned, once it has committed. Free of the pipeline's imports
(the task modules are imported only when pipeline work is sent), so the API can enqueue webhook
deliveries without loading torch and the models."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from worker.jobs import names
from worker.jobs.app import app

if TYPE_CHECKING:
    from worker.stages.lifecycle import Followups

log = logging.getLogger(__name__)


def enqueue(followups: Followups) -> None:
    from worker.jobs.asr import transcribe_recording
    from worker.jobs.infer import infer_segments
    from worker.jobs.ingest import ingest_recording

    for rec_id in followups.ingest:
        ingest_recording.delay(str(rec_id))
    for batch in followups.infer_batches:
        infer_segments.delay([str(i) for i in batch])
    for rec_id in followups.transcribe:
        transcribe_recording.delay(str(rec_id))
    enqueue_rule_work(followups.evaluate_rules, followups.completed, followups.failed)


def enqueue_deliveries(delivery_ids: Iterable[uuid.UUID], countdown: float | None = None) -> None:
    for delivery_id in delivery_ids:
        try:
            app.send_task(names.DELIVER.name, args=[str(delivery_id)], countdown=countdown)
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
        app.send_task(names.EVALUATE.name, args=[str(rec_id), True])
    for rec_id in evaluate:
        if rec_id not in done:  # the final pass covers it
            app.send_task(names.EVALUATE.name, args=[str(rec_id), False])
    for rec_id in failed:
        app.send_task(names.PUBLISH.name, args=[str(rec_id), "recording.failed"])
