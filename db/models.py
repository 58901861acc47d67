"""SQLAlchemy 2.0 models. The schema itself changes only through Alembic (migrations/)."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy import false as sa_false
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# JSONB on Postgres (indexable), plain JSON elsewhere (SQLite for the embedded mode).
JSONType = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class RecordingStatus(enum.StrEnum):
    received = "received"
    # A call still streaming in over /v1/live: segments are analyzed as they close.
    live = "live"
    decoding = "decoding"
    segmented = "segmented"
    analyzing = "analyzing"
    done = "done"
    failed = "failed"

    @property
    def is_final(self) -> bool:
        return self in (RecordingStatus.done, RecordingStatus.failed)


class Tenant(Base):
    __tablename__ = "tenant"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Which speaker roles get emotion inference; default customers only (AI Act Art. 5(1)(f)).
    analyzed_roles: Mapped[list[str]] = mapped_column(JSONType, default=lambda: ["customer"])
    # Mono recordings and stereo calls without channel roles have role "unknown".
    analyze_unknown_roles: Mapped[bool] = mapped_column(Boolean, default=True)
    # Class prior applied at inference (worker/pipeline/priors.py): "balanced" (the training prior,
    # no label's recall traded away) or "calls" (neutral-heavy, fewer false alarms).
    emotion_prior: Mapped[str] = mapped_column(String(16), default="balanced", server_default="balanced")
    # Retention in days, counted from a call's upload; None keeps it until deleted by hand. Media
    # (the upload and the decoded-audio cache) and derived data (the call's row, segments,
    # predictions, alerts, ...) expire separately, so audio can go long before the analytics.
    media_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant", cascade="all, delete-orphan")


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # Only a SHA-256 of the key is stored; keys are 256-bit random so a slow hash adds nothing.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    # read: GET only; write: everything a tenant does with its data; admin: also manages keys.
    scope: Mapped[str] = mapped_column(String(16), server_default="write")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Updated at most once a minute (api/deps.py), so a busy key does not write on every request.
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    tenant: Mapped[Tenant] = relationship(back_populates="api_keys")


class DashboardSession(Base):
    """A supervisor's dashboard login. The cookie carries a random token; only its SHA-256 is the
    row's id, so reading this table does not hand out live sessions. Logout deletes the row, and so
    does revoking the key it was opened with; an expired row is refused and swept at the next login."""

    __tablename__ = "dashboard_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_key.id", ondelete="CASCADE"), index=True)
    # Every state-changing dashboard form must echo this (synchronizer token, bound to the session).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Recording(Base):
    __tablename__ = "recording"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id"),
        Index("ix_recording_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_recording_status_updated", "status", "updated_at"),
        Index("ix_recording_tenant_media", "tenant_id", "media_deleted_at", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    filename: Mapped[str] = mapped_column(String(500), default="")
    media_uri: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    container: Mapped[str] = mapped_column(String(64), default="")
    has_video: Mapped[bool] = mapped_column(Boolean, default=False)
    channels: Mapped[int] = mapped_column(Integer, default=1)
    # {"0": "agent", "1": "customer"}: keys are channel indexes as strings (JSON object keys).
    channel_roles: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    language: Mapped[str | None] = mapped_column(String(32), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=RecordingStatus.received.value)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Times the pipeline was (re)started for this recording; bounded by settings.max_attempts.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When recording.completed / recording.failed was published (outbox mark): the sweep publishes
    # again for final rows still without it, so a message lost after the final commit loses no event.
    final_event_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Per-speaker references of the audio model (per-speaker normalisation), keyed by model version
    # then speaker: {"ser-v2+…": {"customer": {...}}}. Made by the infer stage when missing.
    # Server-side defaults only (here and on prediction's new columns): rows written by code that
    # predates the column keep working, and tests that build old revisions can insert through Core.
    speaker_references: Mapped[dict[str, Any]] = mapped_column(JSONType, server_default="{}")
    # 0 for the first analysis, +1 per rescore: a rescored call's recording.completed is a new event.
    analysis_round: Mapped[int] = mapped_column(Integer, server_default="0")
    # A live call whose socket dropped before its stop message (what arrived is still analyzed).
    disconnected: Mapped[bool] = mapped_column(Boolean, server_default=sa_false())
    # Conversation measures (worker/conversation.py), written when the recording becomes done.
    conversation: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # Set when retention removed the media; the analysis stays until the data itself expires.
    media_deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # What the last rescore found ({"at", "model_version", "outcome", "segments", "rules_rerun"}),
    # so a rescore that had nothing to do says so instead of silently changing nothing.
    last_rescore: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)

    segments: Mapped[list[Segment]] = relationship(
        back_populates="recording", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Segment.index",
    )


class Segment(Base):
    __tablename__ = "segment"
    __table_args__ = (UniqueConstraint("recording_id", "index"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    recording_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("recording.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    channel: Mapped[int] = mapped_column(Integer, default=0)
    speaker: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    # Cheap prosody measured at ingest (pitch, loudness, rate); the speaker's call baseline
    # for reasoning is derived from these across the speaker's segments.
    acoustics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    analyzed: Mapped[bool] = mapped_column(Boolean, default=True)
    skip_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Inference runs started on this segment (committed before the model runs): a segment whose
    # batch keeps killing its worker is given up after settings.max_attempts, not retried forever.
    infer_attempts: Mapped[int] = mapped_column(Integer, server_default="0")

    recording: Mapped[Recording] = relationship(back_populates="segments")
    predictions: Mapped[list[Prediction]] = relationship(
        back_populates="segment", cascade="all, delete-orphan", passive_deletes=True
    )
    correction: Mapped[SegmentLabel | None] = relationship(
        back_populates="segment", cascade="all, delete-orphan", passive_deletes=True, uselist=False
    )


class Prediction(Base):
    __tablename__ = "prediction"
    __table_args__ = (UniqueConstraint("segment_id", "model_name", "model_version"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    segment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("segment.id", ondelete="CASCADE"))
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(32))
    raw_label: Mapped[str] = mapped_column(String(200))
    scores: Mapped[dict[str, float]] = mapped_column(JSONType)
    valence: Mapped[float | None] = mapped_column(Float, nullable=True)
    arousal: Mapped[float | None] = mapped_column(Float, nullable=True)
    confidence: Mapped[float] = mapped_column(Float)
    # List of evidence items (absolute call times), see worker.pipeline.contracts.Evidence.
    reasoning: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    reasoning_text: Mapped[str] = mapped_column(Text, default="")
    # Fused confidence below settings.uncertain_below: shown as uncertain, never hidden.
    uncertain: Mapped[bool] = mapped_column(Boolean, server_default=sa_false())
    # Per-modality answers behind the fused label: {"audio": {model, version, label, confidence,
    # scores, weight}, "text": {...}, "video": {...}}.
    modalities: Mapped[dict[str, Any]] = mapped_column(JSONType, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    segment: Mapped[Segment] = relationship(back_populates="predictions")


class SegmentLabel(Base):
    """A supervisor's correction: the true label of a segment, kept beside the model's predictions
    (which are never changed), with who set it and when. One current label per segment."""

    __tablename__ = "segment_label"

    segment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("segment.id", ondelete="CASCADE"),
                                                  primary_key=True)
    # Denormalised so `callpulse train --tenant` selects a tenant's corrections without joins.
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What the model said when the supervisor corrected it (its newest prediction then).
    model_label: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    labeled_by: Mapped[str] = mapped_column(String(200))  # the API key's name and short id
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_key.id", ondelete="SET NULL"),
                                                         nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    segment: Mapped[Segment] = relationship(back_populates="correction")


class Transcript(Base):
    """The words of a call, from the client's own ASR (uploaded) or ours; one per recording."""

    __tablename__ = "transcript"

    recording_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("recording.id", ondelete="CASCADE"),
                                                    primary_key=True)
    source: Mapped[str] = mapped_column(String(16), default="client")  # client | asr
    format: Mapped[str] = mapped_column(String(16))  # json | webvtt
    # [{"start_s", "end_s", "text", "speaker", "channel", "words": [[start_s, end_s, text], ...]}]
    utterances: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- Escalation rules, alerts and webhooks ---------------------------------------------


class AlertState(enum.StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


class DeliveryStatus(enum.StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"  # given up: attempts exhausted or the target was refused


class Rule(Base):
    """A tenant's escalation rule; its definition lives in immutable versions (RuleVersion)."""

    __tablename__ = "rule"
    __table_args__ = (Index("ix_rule_tenant_enabled", "tenant_id", "enabled"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    # Deleting a rule hides it and stops evaluation; its alerts keep naming the version that fired.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RuleVersion(Base):
    """One immutable definition of a rule; editing a rule adds a version, never rewrites one."""

    __tablename__ = "rule_version"
    __table_args__ = (UniqueConstraint("rule_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    rule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rule.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    # The validated, normalised definition (worker.rules.language.RuleDefinition as JSON).
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    severity: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Alert(Base):
    """One rule episode on one recording. (rule_id, recording_id, window_key) is unique, so
    re-run or twice-delivered evaluations can only ever insert the same alert once."""

    __tablename__ = "alert"
    __table_args__ = (
        UniqueConstraint("rule_id", "recording_id", "window_key"),
        Index("ix_alert_tenant_fired", "tenant_id", "fired_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    rule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rule.id", ondelete="CASCADE"))
    rule_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("rule_version.id", ondelete="CASCADE"))
    rule_version: Mapped[int] = mapped_column(Integer)
    recording_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("recording.id", ondelete="CASCADE"),
                                                    index=True)
    # Identifies the episode along the call (the segment where it started firing), stable across
    # re-evaluations of a growing call: see worker.rules.evaluate.
    window_key: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    first_segment_index: Mapped[int] = mapped_column(Integer)
    last_segment_index: Mapped[int] = mapped_column(Integer)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    # Call time at which the condition held (end of the segment that completed it).
    fired_at_s: Mapped[float] = mapped_column(Float)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    state: Mapped[str] = mapped_column(String(16), default=AlertState.open.value)
    fired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoint"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    # Kept in clear: signing needs it. `whsec_` + base64 of 32 random bytes (Standard Webhooks).
    secret: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One event for one endpoint. ``message_id`` (the ``webhook-id`` header) is derived from the
    event, so publishing an event twice adds nothing and receivers can dedupe across retries."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "message_id"),
        Index("ix_webhook_delivery_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(100))
    # The exact bytes that are signed and sent, identical on every attempt.
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.pending.value)
    # Attempts in the current series (a manual redelivery starts a new series); the log keeps all.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A worker sending this delivery holds it until then, so a duplicate task does not send twice.
    leased_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class WebhookAttempt(Base):
    """The delivery log: one row per HTTP attempt, successful or not."""

    __tablename__ = "webhook_attempt"
    __table_args__ = (UniqueConstraint("delivery_id", "number"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_delivery.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    response_excerpt: Mapped[str] = mapped_column(Text, default="")


# --- Dashboard and analytics indexes (migration 0003) -----------------------------------

# The newest prediction of a segment (what timelines and aggregates read) is found by an
# index-only probe instead of a sort or a hash anti-join over every prediction.
Index("ix_prediction_segment_newest", Prediction.segment_id, Prediction.created_at, Prediction.id)
# Aggregates and the calls list filter on status within a tenant's time range.
Index("ix_recording_tenant_status_created", Recording.tenant_id, Recording.status, Recording.created_at)
# The calls list filtered by agent or queue (keys of the free metadata): newest first, without
# walking the tenant's whole history for a rare agent.
Index("ix_recording_tenant_agent", Recording.tenant_id, Recording.meta["agent"].as_string(),
      Recording.created_at)
Index("ix_recording_tenant_queue", Recording.tenant_id, Recording.meta["queue"].as_string(),
      Recording.created_at)


# --- Per-call emotion rollup (migration 0004) ----------------------------------------------------


class RecordingEmotionRollup(Base):
    """A finished call's emotions per (role, label): what /v1/analytics/emotions and the dashboard
    overview sum, so they scan a few rows per call instead of joining segments and predictions.
    Written with the ``done`` status, in its transaction (db.queries.analytics.write_emotion_rollup);
    counts each segment's newest prediction. Every done call also has one row with role and label
    ``*`` (CALL_ROW, zero figures), so calls without any prediction are still counted. The key
    (recording_id, role, label) is the primary key. tenant_id, created_at, day, agent and queue
    are copies of the recording's (its metadata is never edited), for the range scans."""

    __tablename__ = "recording_emotion_rollup"
    __table_args__ = (Index("ix_recording_emotion_rollup_tenant_created", "tenant_id", "created_at"),)

    recording_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("recording.id", ondelete="CASCADE"),
                                                    primary_key=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # created_at's UTC calendar day, the "day" group key: a column has planner statistics (few
    # distinct days: hash aggregation), an expression over created_at has none.
    day: Mapped[date] = mapped_column(Date)
    agent: Mapped[str | None] = mapped_column(Text, nullable=True)  # metadata ->> 'agent'
    queue: Mapped[str | None] = mapped_column(Text, nullable=True)  # metadata ->> 'queue'
    segments: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    valence_sum: Mapped[float] = mapped_column(Float)
    valence_n: Mapped[int] = mapped_column(Integer)
    arousal_sum: Mapped[float] = mapped_column(Float)
    arousal_n: Mapped[int] = mapped_column(Integer)
    # The highest model version among the counted predictions (they normally share one).
    model_version: Mapped[str | None] = mapped_column(String(100), nullable=True)


# The recovery tables live in their own module on this Base; importing it here registers them with
# the metadata everything else (Alembic's comparison, the tests' schema checks) reads.
from db.recovery_models import OutboxMessage, WorkLease  # noqa: E402,F401
