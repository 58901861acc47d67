"""Tasks of the ``ingest`` queue: decode and segment a recording, the periodic sweep that re-drives
stuck recordings from the database, and the periodic per-tenant retention. Failures retry with
backoff; media problems are recorded by the stage itself; anything else retries a few times, then
the recording is failed with the reason, never dropped."""

from __future__ import annotations

import uuid

from celery import Task

from callpulse.settings import get_settings
from worker.jobs import lease, names
from worker.jobs.app import app
from worker.jobs.enqueue import enqueue
from worker.jobs.reconnect import sweep_now
from worker.jobs.retry import give_up_or_retry, run_periodic
from worker.stages import ingest


@app.task(bind=True, **names.INGEST.options())
def ingest_recording(self: Task, recording_id: str) -> None:
    rec_id = uuid.UUID(recording_id)
    try:
        # The lease covers the follow-ups too: released only once they are published or kept.
        with lease.held("ingest", [rec_id], self.request.hostname):
            enqueue(ingest.ingest(rec_id, get_settings()))
    except Exception as exc:
        give_up_or_retry(self, exc, names.INGEST, lambda: [rec_id], "ingest")


@app.task(**names.SWEEP.options())
def sweep_stuck_recordings(reconnect: bool = False) -> None:
    """Every sweep_interval_s from beat, and at once when a worker (re)connects to the broker."""
    sweep_now(reconnect)


@app.task(**names.RETENTION.options())
def apply_retention() -> None:
    # No retry: the next beat tick is the retry, and each batch it finished is already committed.
    from worker.stages.retention import apply_retention as run

    run_periodic("retention", lambda: run(get_settings()))


@app.task(**names.SWEEP_MEDIA.options())
def sweep_media() -> None:
    # No retry: the next beat tick is the retry.
    from worker.stages.media_sweep import sweep_media as run

    run_periodic("media sweep", lambda: run(get_settings()))
