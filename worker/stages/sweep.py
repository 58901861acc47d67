"""Sweep stage: re-drive recordings that stopped moving (lost message, dead worker) from the
database, and publish final events that were never published (the outbox half)."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

from callpulse.settings import Settings
from db.models import RecordingStatus, utcnow
from db.queries import pipeline as q
from db.session import transaction
from worker import runtime
from worker.pipeline.media import audio_store
from worker.stages.lifecycle import (
    Followups,
    batches,
    complete,
    waits_for_asr,
)

log = logging.getLogger(__name__)


def sweep(settings: Settings) -> Followups:
    """Re-enqueue recordings that stopped moving (lost message, dead worker). The sweep never fails
    a recording itself: waiting in a long queue is not a fault. Ingest counts its own starts and
    gives up after max_attempts; a duplicate message is harmless because every stage is idempotent."""
    followups = Followups()
    cutoff = utcnow() - timedelta(seconds=settings.stuck_after_s)
    model = runtime.emotion_model(settings)
    per_status: dict[str, int] = defaultdict(int)
    caches: list[Path] = []
    abandoned: list[uuid.UUID] = []
    with transaction() as s:
        for rec in q.stuck_recordings(s, cutoff):
            per_status[rec.status] += 1
            rec.updated_at = utcnow()  # at most one re-enqueue per stuck_after_s
            if rec.status == RecordingStatus.live.value:
                # No heartbeat from its socket for stuck_after_s: the API process died mid-call.
                abandoned.append(rec.id)
                continue
            if rec.status in (RecordingStatus.received.value, RecordingStatus.decoding.value):
                followups.ingest.append(rec.id)
                continue
            pending = q.pending_segment_ids(s, rec.id, model.name, model.version)
            if pending and waits_for_asr(s, rec, settings):
                followups.transcribe.append(rec.id)  # its asr message was lost, or waits in the queue
            elif pending:
                followups.infer_batches.extend(batches(pending, settings.infer_batch_size))
            else:
                caches.append(complete(s, rec, settings, followups))
        # The outbox half: final rows whose event was never published get it now (idempotent: a
        # delivery's webhook-id is derived from the event and the recording).
        for rec in q.unpublished_final_recordings(s, cutoff):
            per_status[f"{rec.status}, event unpublished"] += 1
            done = rec.status == RecordingStatus.done.value
            (followups.completed if done else followups.failed).append(rec.id)
    for cache in caches:
        audio_store.drop_cache(cache)
    for rec_id in abandoned:
        from worker.stages import live as live_stage

        ended = live_stage.finish(rec_id, settings, disconnected=True)
        followups.completed += ended.completed
        followups.failed += ended.failed
    if per_status:
        log.warning("sweep re-enqueued stuck recordings: %s", dict(per_status))
    return followups
