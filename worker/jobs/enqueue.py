"""Sending follow-ups: what a stage returned, once it has committed. `messages` turns a stage's
`Followups` into task messages (a task name and its arguments) in one place, so the workers and the
embedded mode (worker/jobs/inline.py, which runs the same messages in process for `callpulse
analyze`) cannot drift apart. Everything sent goes through the outbox (worker/jobs/outbox.py), so a
broker outage after the commit keeps the message in Postgres until the broker is back instead of
losing it. Free of the pipeline's imports (sent by name), so the API can enqueue webhook deliveries
without loading torch and the models."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.jobs import names, outbox

if TYPE_CHECKING:
    from worker.stages.lifecycle import Followups

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One follow-up as the broker carries it: the task's name and its JSON arguments."""

    task: str
    args: list[Any]


def messages(followups: Followups) -> list[Message]:
    """Every message a stage's follow-ups stand for, in sending order."""
    out = [Message(names.INGEST.name, [str(rec_id)]) for rec_id in followups.ingest]
    out += [Message(names.INFER.name, [[str(i) for i in batch]]) for batch in followups.infer_batches]
    out += [Message(names.TRANSCRIBE.name, [str(rec_id)]) for rec_id in followups.transcribe]
    out += [Message(names.RESUME.name, [str(rec_id)]) for rec_id in followups.resume]
    return out + rule_messages(followups.evaluate_rules, followups.completed, followups.failed)


def enqueue(followups: Followups) -> None:
    for message in messages(followups):
        outbox.send(message.task, message.args)


def enqueue_deliveries(delivery_ids: Iterable[uuid.UUID], countdown: float | None = None) -> None:
    for delivery_id in delivery_ids:
        try:
            outbox.send(names.DELIVER.name, [str(delivery_id)], countdown=countdown)
        except Exception:
            # Broker and database both down: the delivery row is committed as pending, and the
            # delivery sweep sends it later.
            log.warning("could not enqueue webhook delivery %s; the sweep will retry", delivery_id,
                        exc_info=True)


def rule_messages(evaluate: Iterable[uuid.UUID], completed: Iterable[uuid.UUID],
                  failed: Iterable[uuid.UUID]) -> list[Message]:
    """Follow-ups of the pipeline stages: evaluate recordings that got predictions, a final pass
    (which publishes recording.completed) for finished ones, recording.failed for failed ones."""
    done = list(completed)
    out = [Message(names.EVALUATE.name, [str(rec_id), True]) for rec_id in done]
    # A recording also in `completed` is covered by its final pass.
    out += [Message(names.EVALUATE.name, [str(rec_id), False]) for rec_id in evaluate if rec_id not in done]
    return out + [Message(names.PUBLISH.name, [str(rec_id), "recording.failed"]) for rec_id in failed]


def enqueue_rule_work(evaluate: Iterable[uuid.UUID], completed: Iterable[uuid.UUID],
                      failed: Iterable[uuid.UUID]) -> None:
    for message in rule_messages(evaluate, completed, failed):
        outbox.send(message.task, message.args)
