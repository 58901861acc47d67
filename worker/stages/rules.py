"""Stage body of the rules queue: evaluate a recording's escalation rules, store the alerts that fired
and publish their events. Owns its transactions, does only what is missing, and returns the webhook
deliveries to enqueue after it committed."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.orm import Session

from db.models import Alert, Recording, RecordingStatus, Rule, RuleVersion, utcnow
from db.queries import alerts as alerts_q
from db.queries import rules as rules_q
from db.session import transaction
from worker.notify import events
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
