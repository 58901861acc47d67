"""Tasks of the ``infer`` queue: the worker that runs the emotion model. Rescoring is here too,
because only this worker knows which model version it targets."""

from __future__ import annotations

import uuid

from celery import Task

from callpulse.settings import get_settings
from worker.jobs import names
from worker.jobs.app import app
from worker.jobs.enqueue import enqueue
from worker.jobs.retry import give_up_or_retry
from worker.stages import infer, lifecycle


@app.task(bind=True, **names.INFER.options())
def infer_segments(self: Task, segment_ids: list[str]) -> None:
    ids = [uuid.UUID(i) for i in segment_ids]
    try:
        enqueue(infer.infer(ids, get_settings()))
    except Exception as exc:
        give_up_or_retry(self, exc, names.INFER, lambda: lifecycle.recordings_of(ids), "inference")


@app.task(bind=True, **names.RESCORE.options())
def rescore_recording(self: Task, recording_id: str, force: bool = False,
                      expected_round: int | None = None, rerun_rules: bool = False) -> None:
    from worker.stages.rescore import rescore

    rec_id = uuid.UUID(recording_id)
    try:
        followups = rescore(rec_id, get_settings(), force, expected_round, rerun_rules)
    except Exception as exc:
        # Giving up leaves the recording as it was (its earlier predictions stand): nothing to fail.
        give_up_or_retry(self, exc, names.RESCORE, lambda: [], "rescoring")
        return
    enqueue(followups)
