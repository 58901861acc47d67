"""Queries of the recovery mechanism: leases on running work and the outbox of unsent messages.
Like every query module, these take a session and never commit: the caller's boundary does."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from db.models import Recording, RecordingStatus, utcnow
from db.recovery_models import OutboxMessage, WorkLease


def claim(session: Session, recording_ids: Iterable[uuid.UUID], stage: str, node: str, boot: str,
          ttl_s: float) -> list[uuid.UUID]:
    """One lease per recording; returns the lease ids (to renew and release). Recordings deleted
    meanwhile are skipped (the foreign key would refuse them)."""
    ids = list(dict.fromkeys(recording_ids))
    if not ids:
        return []
    present = set(session.scalars(select(Recording.id).where(Recording.id.in_(ids))))
    now = utcnow()
    leases = [WorkLease(id=uuid.uuid4(), recording_id=rec_id, stage=stage, node=node, boot=boot,
                        claimed_at=now, expires_at=now + timedelta(seconds=ttl_s))
              for rec_id in ids if rec_id in present]
    session.add_all(leases)
    return [lease.id for lease in leases]


def renew(session: Session, lease_ids: Sequence[uuid.UUID], ttl_s: float) -> None:
    if lease_ids:
        session.execute(update(WorkLease).where(WorkLease.id.in_(list(lease_ids)))
                        .values(expires_at=utcnow() + timedelta(seconds=ttl_s)))


def release(session: Session, lease_ids: Sequence[uuid.UUID]) -> None:
    if lease_ids:
        session.execute(delete(WorkLease).where(WorkLease.id.in_(list(lease_ids))))


def end_previous_incarnations(session: Session, node: str, boot: str) -> int:
    """A worker that starts again under the same node name ends its dead predecessor's leases now:
    nothing of that process survives a restart."""
    result = session.execute(update(WorkLease).where(WorkLease.node == node, WorkLease.boot != boot)
                             .values(expires_at=utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)


def take_expired(session: Session, now: datetime, limit: int = 500) -> dict[uuid.UUID, set[str]]:
    """Delete the leases that ran out and return their recordings that no live lease covers (a
    second worker may hold the same recording, e.g. another infer batch: it finishes the work),
    each with the stages whose lease ran out."""
    expired = list(session.execute(
        select(WorkLease.id, WorkLease.recording_id, WorkLease.stage).where(WorkLease.expires_at < now)
        .order_by(WorkLease.expires_at).limit(limit).with_for_update(skip_locked=True)))
    if not expired:
        return {}
    session.execute(delete(WorkLease).where(WorkLease.id.in_([lease_id for lease_id, _, _ in expired])))
    stages: dict[uuid.UUID, set[str]] = {}
    for _, rec_id, stage in expired:
        stages.setdefault(rec_id, set()).add(stage)
    live = set(session.scalars(select(WorkLease.recording_id).where(
        WorkLease.recording_id.in_(list(stages)), WorkLease.expires_at >= now)))
    return {rec_id: held for rec_id, held in stages.items() if rec_id not in live}


def unleased_unfinished(session: Session, now: datetime, limit: int = 1000) -> list[Recording]:
    """Recordings still in the pipeline (or final without their event) that no live worker holds:
    after the broker lost its queues, every one of them lost its message."""
    leased = exists().where(WorkLease.recording_id == Recording.id, WorkLease.expires_at >= now)
    unfinished = Recording.status.not_in([RecordingStatus.done.value, RecordingStatus.failed.value]) | (
        Recording.final_event_at.is_(None))
    stmt = (select(Recording).where(unfinished, ~leased).order_by(Recording.updated_at).limit(limit)
            .with_for_update(skip_locked=True))
    return list(session.scalars(stmt))


def add_message(session: Session, task: str, args: list[Any], countdown_s: float | None,
                error: str | None) -> uuid.UUID:
    msg_id = uuid.uuid4()
    session.add(OutboxMessage(id=msg_id, task=task, args=args, countdown_s=countdown_s,
                              created_at=utcnow(), error=error))
    return msg_id


def delete_message(session: Session, msg_id: uuid.UUID) -> None:
    session.execute(delete(OutboxMessage).where(OutboxMessage.id == msg_id))


def lock_messages(session: Session, limit: int) -> list[OutboxMessage]:
    """Oldest first, skipping rows another sweep is sending, so two sweeps never send one twice."""
    stmt = (select(OutboxMessage).order_by(OutboxMessage.created_at).limit(limit)
            .with_for_update(skip_locked=True))
    return list(session.scalars(stmt))


def outbox_size(session: Session) -> int:
    from sqlalchemy import func

    return int(session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)
