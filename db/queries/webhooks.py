"""Webhook endpoints, deliveries and the attempt log. Never commits."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from db.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint, utcnow
from db.queries.upsert import insert_ignore


def create_endpoint(session: Session, tenant_id: uuid.UUID, url: str, events: list[str], description: str,
                    secret: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(tenant_id=tenant_id, url=url, events=events, description=description,
                               secret=secret)
    session.add(endpoint)
    session.flush()
    return endpoint


def get_endpoint(session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id,
                                         WebhookEndpoint.tenant_id == tenant_id)
    return session.scalars(stmt).one_or_none()


def list_endpoints(session: Session, tenant_id: uuid.UUID) -> list[WebhookEndpoint]:
    stmt = (select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id))
    return list(session.scalars(stmt))


def delete_endpoint(session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> bool:
    stmt = delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id,
                                         WebhookEndpoint.tenant_id == tenant_id)
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def subscribed_endpoints(session: Session, tenant_id: uuid.UUID, event_type: str) -> list[WebhookEndpoint]:
    # Few endpoints per tenant: filtering the event list in Python keeps one query for both dialects.
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id,
                                         WebhookEndpoint.enabled.is_(True))
    return [e for e in session.scalars(stmt) if event_type in (e.events or [])]


def add_delivery(session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID, event_type: str,
                 message_id: str, body: str) -> uuid.UUID | None:
    """Idempotent on (endpoint, message id): publishing the same event twice adds nothing (None)."""
    stmt = insert_ignore(session, WebhookDelivery, ["endpoint_id", "message_id"]).values(
        id=uuid.uuid4(), tenant_id=tenant_id, endpoint_id=endpoint_id, event_type=event_type,
        message_id=message_id, body=body, status=DeliveryStatus.pending.value, attempts=0,
        next_attempt_at=utcnow(), created_at=utcnow(), updated_at=utcnow(),
    )
    return cast(uuid.UUID | None, session.scalar(stmt.returning(WebhookDelivery.id)))


def claim_delivery(session: Session, delivery_id: uuid.UUID, lease: timedelta
                   ) -> tuple[WebhookDelivery, WebhookEndpoint] | None:
    """Lock a pending, due, unleased delivery and lease it to the caller; None if there is nothing
    to send now (already sent, given up, not yet due, or another worker holds it)."""
    now = utcnow()
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.pending.value)
        .with_for_update(skip_locked=True)
    )
    delivery = session.scalars(stmt).one_or_none()
    if delivery is None or delivery.next_attempt_at > now + timedelta(seconds=1):
        return None
    if delivery.leased_until is not None and delivery.leased_until > now:
        return None
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    if endpoint is None:
        return None
    delivery.leased_until = now + lease
    return delivery, endpoint


def record_attempt(session: Session, delivery_id: uuid.UUID, started_at: datetime, duration_ms: float,
                   status_code: int | None, error: str | None, excerpt: str) -> WebhookDelivery | None:
    delivery = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update()
    ).one_or_none()
    if delivery is None:  # its endpoint was deleted meanwhile
        return None
    number = (session.scalar(
        select(WebhookAttempt.number).where(WebhookAttempt.delivery_id == delivery_id)
        .order_by(WebhookAttempt.number.desc()).limit(1)
    ) or 0) + 1
    session.add(WebhookAttempt(delivery_id=delivery_id, number=number, started_at=started_at,
                               duration_ms=duration_ms, status_code=status_code, error=error,
                               response_excerpt=excerpt))
    delivery.attempts += 1
    delivery.leased_until = None
    delivery.last_error = error
    delivery.updated_at = utcnow()
    return delivery


def get_delivery(session: Session, tenant_id: uuid.UUID, delivery_id: uuid.UUID, for_update: bool = False
                 ) -> WebhookDelivery | None:
    stmt = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                         WebhookDelivery.tenant_id == tenant_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def list_deliveries(session: Session, endpoint_id: uuid.UUID, status: str | None, limit: int
                    ) -> list[WebhookDelivery]:
    stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    return list(session.scalars(stmt.order_by(WebhookDelivery.created_at.desc(),
                                              WebhookDelivery.id.desc()).limit(limit)))


def attempts_of(session: Session, delivery_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[WebhookAttempt]]:
    out: dict[uuid.UUID, list[WebhookAttempt]] = {i: [] for i in delivery_ids}
    if delivery_ids:
        stmt = (select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(delivery_ids))
                .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number))
        for attempt in session.scalars(stmt):
            out[attempt.delivery_id].append(attempt)
    return out


def overdue_deliveries(session: Session, due_before: datetime, limit: int = 500) -> list[uuid.UUID]:
    """Pending deliveries whose retry message was lost (overdue and not leased): for the sweep."""
    now = utcnow()
    stmt = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == DeliveryStatus.pending.value,
               WebhookDelivery.next_attempt_at < due_before,
               or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now))
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


# How the notify stage's attempt log words a policy refusal (private address, bad URL): such a
# delivery is never resumed, the endpoint has to be changed first.
REFUSED_PREFIX = "target refused"


def resume_failed_deliveries(session: Session, now: datetime, created_after: datetime, probe_before: datetime,
                             one_attempt: int, max_logged: int, limit: int = 500) -> list[uuid.UUID]:
    """Failed deliveries worth another attempt now that their receiver may be back: those of
    enabled endpoints, created after ``created_after``, not refused by policy, with fewer than
    ``max_logged`` attempts in their log (a receiver that always rejects one event is not asked
    forever). A delivery is put back as pending for a single attempt (``attempts = one_attempt``):
    - when its endpoint answered another delivery after this one last failed (the receiver is
      back), or
    - as its endpoint's one probe, the delivery that failed longest ago, when nothing of that
      endpoint is pending and none of its deliveries changed since ``probe_before``.
    Returns the ids to send."""
    logged = (select(func.count()).select_from(WebhookAttempt)
              .where(WebhookAttempt.delivery_id == WebhookDelivery.id).scalar_subquery())
    failed = list(session.scalars(
        select(WebhookDelivery)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.status == DeliveryStatus.failed.value,
               WebhookDelivery.created_at >= created_after,
               WebhookEndpoint.enabled.is_(True),
               or_(WebhookDelivery.last_error.is_(None),
                   ~WebhookDelivery.last_error.startswith(REFUSED_PREFIX)),
               logged < max_logged)
        .order_by(WebhookDelivery.updated_at).limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)))
    if not failed:
        return []
    endpoints = list({d.endpoint_id for d in failed})
    answered = dict(session.execute(
        select(WebhookDelivery.endpoint_id, func.max(WebhookDelivery.delivered_at))
        .where(WebhookDelivery.endpoint_id.in_(endpoints),
               WebhookDelivery.status == DeliveryStatus.succeeded.value)
        .group_by(WebhookDelivery.endpoint_id)).tuples().all())
    busy = set(session.scalars(select(WebhookDelivery.endpoint_id).where(
        WebhookDelivery.endpoint_id.in_(endpoints), WebhookDelivery.status == DeliveryStatus.pending.value)))
    # The probe interval is the endpoint's: any delivery of it that changed since counts.
    busy |= set(session.scalars(
        select(WebhookDelivery.endpoint_id).where(WebhookDelivery.endpoint_id.in_(endpoints))
        .group_by(WebhookDelivery.endpoint_id).having(func.max(WebhookDelivery.updated_at) >= probe_before)))
    resumed: list[uuid.UUID] = []
    for delivery in failed:
        answered_at = answered.get(delivery.endpoint_id)
        if answered_at is not None and answered_at > delivery.updated_at:
            pass
        elif delivery.endpoint_id in busy:
            continue
        else:
            busy.add(delivery.endpoint_id)  # one probe per endpoint and pass
        delivery.status, delivery.attempts = DeliveryStatus.pending.value, one_attempt
        delivery.next_attempt_at = delivery.updated_at = now
        resumed.append(delivery.id)
    return resumed
