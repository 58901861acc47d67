"""Stage bodies of the rules and notify queues. Each owns its transactions, takes ids, does only
what is missing, and returns the webhook deliveries to enqueue after it committed."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy.orm import Session

from callpulse import metrics
from callpulse.settings import Settings
from db.models import Alert, DeliveryStatus, Recording, RecordingStatus, Rule, RuleVersion, utcnow
from db.queries import alerts as alerts_q
from db.queries import rules as rules_q
from db.queries import webhooks as webhooks_q
from db.session import transaction
from worker import events, notify
from worker.rules import Firing, evaluate, trajectory

log = logging.getLogger(__name__)


def _alert_values(rec: Recording, rule: Rule, version: RuleVersion, firing: Firing) -> dict[str, object]:
    return {
        "id": uuid.uuid4(), "tenant_id": rec.tenant_id, "rule_id": rule.id, "rule_version_id": version.id,
        "rule_version": version.version, "recording_id": rec.id, "window_key": firing.window_key,
        "severity": version.severity, "first_segment_index": firing.first_segment_index,
        "last_segment_index": firing.last_segment_index, "start_s": firing.start_s, "end_s": firing.end_s,
        "fired_at_s": firing.fired_at_s, "evidence": firing.evidence, "state": "open",
        "fired_at": utcnow(), "note": "",
    }


def fire_alerts(s: Session, rec: Recording) -> list[uuid.UUID]:
    """Evaluate the tenant's enabled rules on the recording's predicted prefix; store each new
    episode (the unique key drops ones already stored) and publish alert.fired for it.

    Each rule runs in its own savepoint: one broken rule (a bad stored definition, an evaluator
    bug, a failed insert) is logged and skipped, instead of aborting the transaction, which would
    stop every other rule and recording.completed (and the sweep would re-queue the final pass
    forever, final_event_at never being set)."""
    rules = rules_q.list_rules(s, rec.tenant_id, enabled=True)
    if not rules:
        return []
    points = trajectory.load(s, rec.id)
    deliveries: list[uuid.UUID] = []
    for rule, version in rules:
        rule_deliveries: list[uuid.UUID] = []
        try:
            with s.begin_nested():
                for firing in evaluate(trajectory.definition_of(version), points):
                    alert_id = alerts_q.insert_alert(s, _alert_values(rec, rule, version, firing))
                    if alert_id is None:
                        continue  # this episode already alerted: a re-run, a duplicate, or the final pass
                    alert = s.get(Alert, alert_id)
                    assert alert is not None
                    rule_deliveries += events.publish(s, rec.tenant_id, "alert.fired", alert_id,
                                                      events.alert_data(alert, rule, rec))
        except Exception:
            # Rolled back to the savepoint: this rule's alerts and deliveries of this pass are gone,
            # so its delivery ids are dropped too; the next pass tries the rule again.
            log.exception("rule %s (version %s) failed on recording %s; skipped", rule.id, version.version,
                          rec.id)
            continue
        deliveries += rule_deliveries
    return deliveries


def evaluate_recording(recording_id: uuid.UUID, final: bool) -> list[uuid.UUID]:
    """Incremental evaluation as predictions land; ``final`` once the recording is done, which also
    publishes recording.completed, after (and in the same commit as) the call's last alerts."""
    with transaction() as s:
        rec = s.get(Recording, recording_id)
        if rec is None:
            return []
        deliveries = fire_alerts(s, rec)
        if final and rec.status == RecordingStatus.done.value:
            deliveries += events.publish(s, rec.tenant_id, "recording.completed", rec.id,
                                         events.recording_data(rec), rec.analysis_round or 0)
            rec.final_event_at = utcnow()
        return deliveries


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
        result = notify.AttemptResult(False, None, f"target refused: {exc}", "", 0.0)

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
