"""Stage bodies of the notify queue: publish a recording's lifecycle event, make one webhook delivery
attempt, and find deliveries whose retry message was lost. Each owns its transactions and returns
what to enqueue after it committed."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from callpulse import metrics
from callpulse.settings import Settings
from db.models import DeliveryStatus, Recording, utcnow
from db.queries import webhooks as webhooks_q
from db.session import transaction
from worker.notify import events
from worker.notify import webhooks as notify

log = logging.getLogger(__name__)



def publish_recording_event(recording_id: uuid.UUID, event_type: str) -> list[uuid.UUID]:
    with transaction() as s:
        rec = s.get(Recording, recording_id)
        if rec is None:
            return []
        deliveries = events.publish(s, rec.tenant_id, event_type, rec.id, events.recording_data(rec),
                                    rec.analysis_round or 0)
        if event_type in ("recording.completed", "recording.failed"):
            rec.final_event_at = utcnow()
        return deliveries


def deliver(delivery_id: uuid.UUID, settings: Settings) -> float | None:
    """One attempt of one delivery. Returns the delay before the next attempt, or None when the
    delivery is finished (sent, given up) or is not this task's to send."""
    # Longer than one attempt can take: notify.send bounds the body by timeout_s overall, but httpx
    # still applies the timeout per connect/write/read phase before the answer starts.
    lease = timedelta(seconds=4 * settings.webhook_timeout_s + 30)
    with transaction() as s:
        claimed = webhooks_q.claim_delivery(s, delivery_id, lease)
        if claimed is None:
            return None
        delivery, endpoint = claimed
        url, secret, message_id, body = endpoint.url, endpoint.secret, delivery.message_id, delivery.body

    started_at = utcnow()
    refused = False
    try:
        # Checked again at every attempt: DNS may have changed since the endpoint was created.
        target = notify.resolve_target(url, settings.webhook_allow_private_targets)
        result = notify.send(target, notify.signed_headers(secret, message_id, body), body,
                             settings.webhook_timeout_s)
    except notify.TargetUnresolved as exc:
        # DNS may be failing only for now (EAI_AGAIN): a failed attempt on the normal backoff path.
        result = notify.AttemptResult(False, None, f"target not resolved: {exc}", "", 0.0)
    except notify.TargetRefused as exc:
        # A policy refusal (private or metadata address, bad URL) stays true: give up at once.
        refused = True
        result = notify.AttemptResult(False, None, f"{webhooks_q.REFUSED_PREFIX}: {exc}", "", 0.0)

    with transaction() as s:
        row = webhooks_q.record_attempt(s, delivery_id, started_at, result.duration_ms, result.status_code,
                                        result.error, result.excerpt)
        if row is None:
            return None
        if result.ok:
            row.status, row.delivered_at = DeliveryStatus.succeeded.value, utcnow()
            metrics.WEBHOOK_DELIVERIES.labels("succeeded").inc()
            return None
        if refused or row.attempts >= settings.webhook_max_attempts:
            row.status = DeliveryStatus.failed.value
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            log.warning("webhook delivery %s given up after %d attempt(s): %s", delivery_id, row.attempts,
                        result.error)
            return None
        delay = notify.retry_delay(row.attempts, settings.webhook_backoff_base_s,
                                   settings.webhook_backoff_cap_s)
        row.next_attempt_at = utcnow() + timedelta(seconds=delay)
        metrics.WEBHOOK_DELIVERIES.labels("retrying").inc()
        return delay


def overdue_deliveries(settings: Settings) -> list[uuid.UUID]:
    """Deliveries whose retry message was lost (broker restart): due for a while, nobody holds them."""
    grace = timedelta(seconds=max(60.0, settings.webhook_backoff_base_s))
    with transaction() as s:
        return webhooks_q.overdue_deliveries(s, utcnow() - grace)


def resumable_deliveries(settings: Settings) -> list[uuid.UUID]:
    """Deliveries that gave up during a receiver outage, tried again once it answers (one attempt
    each, and one probe per endpoint every webhook_probe_interval_s while it does not), for
    deliveries of the last webhook_resume_window_s: a long outage does not leave events undelivered
    until someone redelivers them by hand."""
    if settings.webhook_resume_window_s <= 0:
        return []
    now = utcnow()
    with transaction() as s:
        return webhooks_q.resume_failed_deliveries(
            s, now, now - timedelta(seconds=settings.webhook_resume_window_s),
            now - timedelta(seconds=settings.webhook_probe_interval_s),
            one_attempt=max(settings.webhook_max_attempts - 1, 0),
            max_logged=2 * settings.webhook_max_attempts)
