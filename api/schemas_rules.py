"""Request and response bodies of /v1/rules and /v1/alerts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from db.models import Alert, AlertState, Rule, RuleVersion
from worker.notify.events import AlertEvidence

DEFINITION_HELP = (
    "The rule definition (docs/RULES.md): a mapping with `when` (the condition), optional `severity`, "
    "`cooldown_s` and `roles`; or the same as a YAML/JSON string."
)
EXAMPLE_DEFINITION: dict[str, Any] = {
    "severity": "high",
    "cooldown_s": 300,
    "roles": ["customer"],
    "when": {"sustained": {"seconds": 20, "condition": {"probability": {"label": "angry", "min": 0.6}}}},
}


class RuleIn(BaseModel):
    """Body of POST /v1/rules and PUT /v1/rules/{id}, as JSON or YAML (Content-Type: application/yaml)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "Angry customer for 20 s", "definition": dict(EXAMPLE_DEFINITION)}]})

    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")
    description: str = Field(default="", max_length=2000, pattern=r"^[^\x00]*$")
    enabled: bool = True
    definition: dict[str, Any] | str = Field(description=DEFINITION_HELP)


class RulePatch(BaseModel):
    """Changes that do not touch the definition (no new version)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^\x00]*$")
    description: str | None = Field(default=None, max_length=2000, pattern=r"^[^\x00]*$")
    enabled: bool | None = None


class RuleVersionOut(BaseModel):
    version: int
    severity: str
    definition: dict[str, Any]
    created_at: datetime

    @classmethod
    def build(cls, version: RuleVersion) -> RuleVersionOut:
        return cls(version=version.version, severity=version.severity, definition=version.definition,
                   created_at=version.created_at)


class RuleOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    enabled: bool
    version: int = Field(description="The current version; alerts name the version that fired.")
    severity: str
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def build(cls, rule: Rule, version: RuleVersion) -> RuleOut:
        return cls(id=rule.id, name=rule.name, description=rule.description, enabled=rule.enabled,
                   version=version.version, severity=version.severity, definition=version.definition,
                   created_at=rule.created_at, updated_at=rule.updated_at)


class RuleList(BaseModel):
    items: list[RuleOut]


class RuleVersionList(BaseModel):
    items: list[RuleVersionOut]


class BacktestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    created_from: datetime = Field(alias="from", description="Recordings created at or after (ISO 8601).")
    created_to: datetime = Field(alias="to", description="Recordings created before (ISO 8601).")
    version: int | None = Field(default=None, ge=1, description="Rule version to test; default: current.")

    @model_validator(mode="after")
    def _ordered(self) -> BacktestIn:
        for value in (self.created_from, self.created_to):
            if value.tzinfo is None:
                raise ValueError("times need an offset, e.g. 2026-01-01T00:00:00Z")
        if self.created_from >= self.created_to:
            raise ValueError("'from' must be earlier than 'to'")
        return self


# The alert evidence the API shows is the one webhooks carry: one model, one shape.
Evidence = AlertEvidence


class BacktestFiring(BaseModel):
    recording_id: uuid.UUID
    external_id: str | None
    recording_status: str
    window_key: str
    severity: str
    fired_at_s: float
    first_segment_index: int
    last_segment_index: int
    start_s: float
    end_s: float
    evidence: list[Evidence]


class BacktestOut(BaseModel):
    rule_id: uuid.UUID
    rule_version: int
    recordings_evaluated: int
    truncated: bool = Field(description="More recordings matched than the backtest limit; newest were used.")
    firings: list[BacktestFiring]


class AlertOut(BaseModel):
    id: uuid.UUID
    rule_id: uuid.UUID
    rule_version: int
    severity: str
    state: AlertState
    recording_id: uuid.UUID
    window_key: str = Field(description="The episode within the recording (segment where it began).")
    first_segment_index: int
    last_segment_index: int
    start_s: float
    end_s: float
    fired_at_s: float = Field(description="Call time at which the condition held.")
    fired_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    note: str
    evidence: list[Evidence]

    @classmethod
    def build(cls, alert: Alert) -> AlertOut:
        return cls(
            id=alert.id, rule_id=alert.rule_id, rule_version=alert.rule_version, severity=alert.severity,
            state=AlertState(alert.state), recording_id=alert.recording_id, window_key=alert.window_key,
            first_segment_index=alert.first_segment_index, last_segment_index=alert.last_segment_index,
            start_s=alert.start_s, end_s=alert.end_s, fired_at_s=alert.fired_at_s, fired_at=alert.fired_at,
            acknowledged_at=alert.acknowledged_at, resolved_at=alert.resolved_at, note=alert.note,
            evidence=[Evidence.model_validate(e) for e in alert.evidence or []],
        )


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None


class AlertAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=2000, pattern=r"^[^\x00]*$")
