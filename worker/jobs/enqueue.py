"""Sending follow-ups: what a stage returned, once it has committed. Everything goes through the
outbox (worker/jobs/outbox.py), so a broker outage after the commit keeps the message in Postgres
until the broker is back instead of losing it. Free of the pipeline's imports (sent by name), so the
API can enqueue webhook deliveries without loading torch and the models."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from worker.jobs import names, outbox

if TYPE_CHECKING:
    from worker.stages.lifecycle import Followups

log = logging.getLogger(__name__)


def enqueue(followups: Followups) -> None:
    for rec_id in followups.ingest:
        outbox.send(names.INGEST.name, [str(rec_id)])
    for batch in followups.infer_batches:
        outbox.send(names.INFER.name, [[str(i) for i in batch]])
    for rec_id in followups.transcribe:
        outbox.send(names.TRANSCRIBE.name, [str(rec_id)])
    for rec_id in followups.resume:
        outbox.send(names.RESUME.name, [str(rec_id)])
    enqueue_rule_work(followups.evaluate_rules, followups.completed, followups.failed)


def enqueue_deliveries(delivery_ids: Iterable[uuid.UUID], countdown: float | None = None) -> None:
    for delivery_id in delivery_ids:
        try:
            outbox.send(names.DELIVER.name, [str(delivery_id)], countdown=countdown)
        except Exception:
            # Broker and database both down: the delivery row is committed as pending, and the
            # delivery sweep sends it later.
            log.warning("could not enqueue webhook delivery %s; the sweep will retry", delivery_id,
                        exc_info=True)


def enqueue_rule_work(evaluate: Iterable[uuid.UUID], completed: Iterable[uuid.UUID],
                      failed: Iterable[uuid.UUID]) -> None:
    """Follow-ups of the pipeline stages: evaluate recordings that got predictions, a final pass
    (which publishes recording.completed) for finished ones, recording.failed for failed ones."""
    done = list(completed)
    for rec_id in done:
        outbox.send(names.EVALUATE.name, [str(rec_id), True])
    for rec_id in evaluate:
        if rec_id not in done:  # the final pass covers it
            outbox.send(names.EVALUATE.name, [str(rec_id), False])
    for rec_id in failed:
        outbox.send(names.PUBLISH.name, [str(rec_id), "recording.failed"])
