"""Sweep stage: re-drive work whose worker died (its lease ran out), everything after the broker lost
its queues, and, as a slow backstop, recordings that have not moved for stuck_after_s; publish
final events that were never published (the outbox half of completion). Never touches work that
is only waiting in a queue: that has neither an expired lease nor a lost broker behind it."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from callpulse.settings import Settings
from db.models import Recording, RecordingStatus, utcnow
from db.queries import pipeline as q
from db.queries import recovery as recovery_q
from db.session import transaction
from worker.stages.lifecycle import (
    Followups,
    waits_for_asr,
)

log = logging.getLogger(__name__)


def sweep(settings: Settings, broker_lost: bool = False) -> Followups:
    """Re-enqueue what stopped moving. ``broker_lost``: the broker came back without its queues
    (a Redis restart without persistence), so every unfinished recording no live worker holds lost
    its message. The sweep never fails a recording itself: ingest counts its own starts and gives
    up after max_attempts; a duplicate message is harmless because every stage is idempotent.

    The sweep loads no model: a segmented or analyzing call goes to the infer queue
    (callpulse.resume_recording), where the worker that runs the model decides with its own version
    what is missing, or that the call is done. A sweep on a worker with another model (the CPU
    worker of the GPU profile) can therefore never complete a call its inference worker has not."""
    followups = Followups()
    now = utcnow()
    cutoff = now - timedelta(seconds=settings.stuck_after_s)
    per_reason: dict[str, int] = defaultdict(int)
    abandoned: list[uuid.UUID] = []
    with transaction() as s:
        dead = recovery_q.take_expired(s, now)
        seen: set[uuid.UUID] = set()
        if dead:
            rows = s.scalars(select(Recording).where(Recording.id.in_(list(dead)))
                             .with_for_update(skip_locked=True))
            for rec in rows:
                seen.add(rec.id)
                if rec.status == RecordingStatus.live.value:
                    # Only the streaming API process's own lease says the call lost its socket
                    # handler; an infer worker that died on one of its segments does not.
                    if "live" in dead[rec.id]:
                        per_reason["live call's API process died"] += 1
                        abandoned.append(rec.id)
                    continue
                if _redrive(s, rec, settings, followups):
                    per_reason[f"worker died ({rec.status})"] += 1
        if broker_lost:
            for rec in recovery_q.unleased_unfinished(s, now):
                if rec.id not in seen and rec.status != RecordingStatus.live.value:
                    seen.add(rec.id)
                    if _redrive(s, rec, settings, followups):
                        per_reason[f"broker lost its queues ({rec.status})"] += 1
        for rec in q.stuck_recordings(s, cutoff):
            if rec.id in seen:
                continue
            per_reason[f"not moved for {settings.stuck_after_s:.0f} s ({rec.status})"] += 1
            rec.updated_at = utcnow()  # at most one re-enqueue per stuck_after_s
            if rec.status == RecordingStatus.live.value:
                # No heartbeat from its socket for stuck_after_s: the API process died mid-call.
                abandoned.append(rec.id)
                continue
            _redrive(s, rec, settings, followups)
        # Final rows whose event was never published get it now (idempotent: a delivery's
        # webhook-id is derived from the event and the recording).
        for rec in q.unpublished_final_recordings(s, cutoff):
            if rec.id not in seen:
                per_reason[f"{rec.status}, event unpublished"] += 1
                _redrive(s, rec, settings, followups)
    for rec_id in abandoned:
        from worker.stages import live as live_stage

        ended = live_stage.finish(rec_id, settings, disconnected=True)
        followups.completed += ended.completed
        followups.failed += ended.failed
        if rec_id not in ended.completed and rec_id not in ended.failed:
            # Segments whose infer message died with the API process (committed, never sent):
            # the infer worker sends on what its model version still lacks, or completes the call.
            followups.resume.append(rec_id)
    if per_reason:
        log.warning("sweep re-enqueued recordings: %s", dict(per_reason))
    return followups


def _redrive(s: Session, rec: Recording, settings: Settings, followups: Followups) -> bool:
    """Send a recording on from where its row says it is. False when there was nothing to do."""
    if RecordingStatus(rec.status).is_final:
        if rec.final_event_at is not None:
            return False
        (followups.completed if rec.status == RecordingStatus.done.value else followups.failed).append(rec.id)
        return True
    if rec.status == RecordingStatus.live.value:
        return False  # the API's socket handler holds a live call (the backstop ends dead ones)
    if rec.status in (RecordingStatus.received.value, RecordingStatus.decoding.value):
        followups.ingest.append(rec.id)
        return True
    if waits_for_asr(s, rec, settings) and q.analyzable_segment_ids(s, rec.id):
        followups.transcribe.append(rec.id)  # its asr message was lost, or waits in the queue
    else:
        followups.resume.append(rec.id)
    return True
