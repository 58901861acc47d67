"""Every follow-up a stage can return is sent by name by the workers (worker/jobs/enqueue.py) and run
in process by the embedded mode (worker/jobs/inline.py) from the same messages: a new kind added to
`Followups` or sent by `enqueue` without an inline runner fails here, not as a `callpulse analyze`
that silently stops halfway. No services: messages are built, never sent."""

from __future__ import annotations

import inspect
import uuid
from dataclasses import fields

from worker.jobs import names
from worker.jobs.enqueue import messages
from worker.jobs.inline import RUNNERS, InlineRunner
from worker.stages.lifecycle import Followups


def _one_of_each() -> list[Followups]:
    """A Followups per field, holding one fresh id (a batch of one for the infer batches)."""
    out = []
    for f in fields(Followups):
        value: list = [[uuid.uuid4()]] if f.name == "infer_batches" else [uuid.uuid4()]
        out.append(Followups(**{f.name: value}))
    return out


def test_every_follow_up_kind_is_sent_by_name() -> None:
    declared = {t.name for t in names.TASKS}
    for followups in _one_of_each():
        sent = messages(followups)
        # A field enqueue does not read would be committed work that nobody ever runs.
        assert sent, followups
        assert {m.task for m in sent} <= declared


def test_every_sent_follow_up_has_an_inline_runner_taking_its_arguments() -> None:
    for followups in _one_of_each():
        for message in messages(followups):
            runner = RUNNERS.get(message.task)
            assert runner is not None, f"{message.task} has no inline runner (worker/jobs/inline.py)"
            # The same arguments the Celery task receives; bind raises TypeError on a mismatch.
            inspect.signature(runner).bind(object.__new__(InlineRunner), *message.args)


def test_inline_runners_are_declared_tasks() -> None:
    assert set(RUNNERS) <= {t.name for t in names.TASKS}
