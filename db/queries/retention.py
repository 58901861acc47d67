"""Which recordings a tenant's retention has expired. The sweep (worker/stages/retention.py) deletes
them in small batches; these functions only select and mark, and never commit."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import Recording, RecordingStatus, Tenant

FINAL = (RecordingStatus.done.value, RecordingStatus.failed.value)


def tenants_with_retention(session: Session) -> list[tuple[uuid.UUID, int | None, int | None]]:
    """(tenant id, media days, data days) of every tenant that has either set."""
    stmt = select(Tenant.id, Tenant.media_retention_days, Tenant.data_retention_days).where(
        (Tenant.media_retention_days.is_not(None)) | (Tenant.data_retention_days.is_not(None)))
    return [(row[0], row[1], row[2]) for row in session.execute(stmt)]


def expired_recordings(session: Session, tenant_id: uuid.UUID, days: int, now: datetime,
                       limit: int) -> list[uuid.UUID]:
    """Recordings uploaded more than ``days`` ago, oldest first, whatever their state (a call
    still unfinished after its whole retention period is as expired as any)."""
    stmt = (select(Recording.id)
            .where(Recording.tenant_id == tenant_id, Recording.created_at < now - timedelta(days=days))
            .order_by(Recording.created_at, Recording.id).limit(limit))
    return list(session.scalars(stmt))


def expired_media(session: Session, tenant_id: uuid.UUID, days: int, now: datetime,
                  limit: int) -> list[uuid.UUID]:
    """Finished recordings uploaded more than ``days`` ago whose media is still there. Calls still
    in the pipeline keep their media until they finish (the workers read it)."""
    stmt = (select(Recording.id)
            .where(Recording.tenant_id == tenant_id, Recording.media_deleted_at.is_(None),
                   Recording.status.in_(FINAL), Recording.created_at < now - timedelta(days=days))
            .order_by(Recording.created_at, Recording.id).limit(limit))
    return list(session.scalars(stmt))


def mark_media_deleted(session: Session, recording_ids: list[uuid.UUID], now: datetime) -> None:
    session.execute(update(Recording)
                    .where(Recording.id.in_(recording_ids), Recording.media_deleted_at.is_(None))
                    .values(media_deleted_at=now))
