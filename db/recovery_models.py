"""Tables of the recovery mechanism, beside db/models.py (which they extend, on the same Base).

A `WorkLease` row says "a live worker is running this stage of this recording": claimed when a task
starts, pushed forward by a heartbeat while it runs, deleted when it ends. A lease whose time ran out
belongs to a worker that died, so the sweep re-drives exactly that work, and never work that is only
waiting in a queue (which has no lease). An `OutboxMessage` is a task message the broker could not
take (broker down after the commit that made its work visible); it is sent when the broker is back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, String, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from db.models import Base, utcnow

# As in db/models.py (not imported from there: this module is imported at its end).
JSONType = JSON().with_variant(JSONB(), "postgresql")


class WorkLease(Base):
    __tablename__ = "work_lease"
    __table_args__ = (
        Index("ix_work_lease_recording", "recording_id"),
        Index("ix_work_lease_expires", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    recording_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("recording.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(String(32))
    # The worker (Celery node name) and its process incarnation: a restarted worker ends the leases
    # of its previous incarnation at once instead of waiting for them to expire.
    node: Mapped[str] = mapped_column(String(255))
    boot: Mapped[str] = mapped_column(String(32))
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxMessage(Base):
    __tablename__ = "outbox_message"
    __table_args__ = (Index("ix_outbox_message_created", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    task: Mapped[str] = mapped_column(String(100))
    args: Mapped[list[Any]] = mapped_column(JSONType)
    countdown_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Why the broker refused it (the last attempt's error), for operators reading the table.
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
