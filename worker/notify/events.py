"""Webhook events: payload models (their JSON Schema is the documented contract, served at
``GET /v1/webhooks/schemas``) and ``publish``, which turns one event into one delivery per
subscribed endpoint. ``publish`` takes the caller's session and never commits; the caller enqueues
the returned delivery ids after its commit."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from db.models import Alert, Recording, Rule, utcnow
from db.queries import webhooks as q

EVENT_TYPES = ("recording.completed", "recording.failed", "alert.fired", "alert.resolved")
# Message ids are derived from (event type, subject), so a re-run publishes the same id and the
# delivery's unique key makes it a no-op; receivers dedupe on the same id across retries.
_MESSAGE_NAMESPACE = uuid.UUID("6f1c2a9e-5b0d-4c1e-9a57-2f8e0c3d4b61")


class RecordingData(BaseModel):
    recording_id: uuid.UUID
    external_id: str | None
    status: Literal["done", "failed"]
    error: str | None = Field(description="Why the recording failed; null when done.")
    duration_s: float | None
    created_at: datetime
    completed_at: datetime | None
    metadata: dict[str, Any]
    analysis_round: int = Field(default=0, description=(
        "0 for the first analysis; +1 for every rescore (POST /v1/recordings/{id}/rescore), each a new "
        "event with its own webhook-id."))
    disconnected: bool = Field(default=False, description=(
        "A live call whose socket dropped before its stop message; what arrived was analyzed."))
    conversation: dict[str, Any] | None = Field(default=None, description=(
        "Conversation measures (talk time and share per role, non-talk time, interruptions, talk "
        "speed, loudness per turn, the customer's sentiment -5..+5 overall and per quarter); "
        "null for a failed recording."))


class AlertEvidence(BaseModel):
    condition: str = Field(description="Path of the condition in the rule, e.g. when.all[0].sustained")
    kind: str
    text: str
    role: str
    first_segment_index: int
    last_segment_index: int
    start_s: float
    end_s: float


class AlertData(BaseModel):
    alert_id: uuid.UUID
    rule_id: uuid.UUID
    rule_name: str
    rule_version: int
    severity: str
    state: Literal["open", "acknowledged", "resolved"]
    recording_id: uuid.UUID
    external_id: str | None
    window_key: str
    first_segment_index: int
    last_segment_index: int
    start_s: float = Field(description="Call time where the evidence begins (seconds).")
    end_s: float
    fired_at_s: float = Field(description="Call time at which the condition held (seconds).")
    fired_at: datetime
    resolved_at: datetime | None
    evidence: list[AlertEvidence]


class RecordingCompleted(BaseModel):
    type: Literal["recording.completed"]
    timestamp: datetime
    data: RecordingData


class RecordingFailed(BaseModel):
    type: Literal["recording.failed"]
    timestamp: datetime
    data: RecordingData


class AlertFired(BaseModel):
    type: Literal["alert.fired"]
    timestamp: datetime
    data: AlertData


class AlertResolved(BaseModel):
    type: Literal["alert.resolved"]
    timestamp: datetime
    data: AlertData


PAYLOADS: dict[str, type[BaseModel]] = {
    "recording.completed": RecordingCompleted, "recording.failed": RecordingFailed,
    "alert.fired": AlertFired, "alert.resolved": AlertResolved,
}


def payload_schemas() -> dict[str, Any]:
    return {name: model.model_json_schema() for name, model in PAYLOADS.items()}


def message_id(event_type: str, subject_id: uuid.UUID, occurrence: int = 0) -> str:
    """Stable per event occurrence (republishing it is deduplicated by the receiver); a rescored
    recording's completion is occurrence 1, 2, … and so a new message."""
    suffix = f":{occurrence}" if occurrence else ""
    return "msg_" + uuid.uuid5(_MESSAGE_NAMESPACE, f"{event_type}:{subject_id}{suffix}").hex


def recording_data(rec: Recording) -> RecordingData:
    return RecordingData(
        recording_id=rec.id, external_id=rec.external_id,
        status="failed" if rec.status == "failed" else "done", error=rec.error,
        duration_s=rec.duration_s, created_at=rec.created_at, completed_at=rec.completed_at,
        metadata=rec.meta or {}, analysis_round=rec.analysis_round or 0,
        disconnected=bool(rec.disconnected), conversation=rec.conversation,
    )


def alert_data(alert: Alert, rule: Rule | None, rec: Recording | None) -> AlertData:
    return AlertData(
        alert_id=alert.id, rule_id=alert.rule_id, rule_name=rule.name if rule else "",
        rule_version=alert.rule_version, severity=alert.severity,
        state=alert.state,  # type: ignore[arg-type]
        recording_id=alert.recording_id, external_id=rec.external_id if rec else None,
        window_key=alert.window_key, first_segment_index=alert.first_segment_index,
        last_segment_index=alert.last_segment_index, start_s=alert.start_s, end_s=alert.end_s,
        fired_at_s=alert.fired_at_s, fired_at=alert.fired_at, resolved_at=alert.resolved_at,
        evidence=[AlertEvidence.model_validate(e) for e in alert.evidence or []],
    )


def publish(session: Session, tenant_id: uuid.UUID, event_type: str, subject_id: uuid.UUID,
            data: RecordingData | AlertData, occurrence: int = 0) -> list[uuid.UUID]:
    """One delivery per enabled endpoint subscribed to ``event_type``; ids of the new ones."""
    endpoints = q.subscribed_endpoints(session, tenant_id, event_type)
    if not endpoints:
        return []
    envelope = PAYLOADS[event_type].model_validate({"type": event_type, "timestamp": utcnow(), "data": data})
    # Serialised once: these exact bytes are signed and sent on every attempt.
    body = json.dumps(envelope.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False)
    msg_id = message_id(event_type, subject_id, occurrence)
    created = [q.add_delivery(session, tenant_id, e.id, event_type, msg_id, body) for e in endpoints]
    return [d for d in created if d is not None]
