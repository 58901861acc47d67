"""Request and response bodies of /v1/webhooks."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from db.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint

EventType = Literal["recording.completed", "recording.failed", "alert.fired", "alert.resolved"]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="http(s) URL with a public address.")
    events: list[EventType] = Field(min_length=1, description="Event types to receive.")
    description: str = Field(default="", max_length=2000, pattern=r"^[^\x00]*$")

    @field_validator("events")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class WebhookPatch(BaseModel):
    """Changes to an endpoint that keep its URL and secret: a disabled endpoint receives nothing
    until it is enabled again (events in between are not queued for it)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    description: str | None = Field(default=None, max_length=2000, pattern=r"^[^\x00]*$")


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    events: list[str]
    description: str
    enabled: bool
    created_at: datetime

    @classmethod
    def fields(cls, endpoint: WebhookEndpoint) -> dict[str, Any]:
        return {"id": endpoint.id, "url": endpoint.url, "events": list(endpoint.events or []),
                "description": endpoint.description, "enabled": endpoint.enabled,
                "created_at": endpoint.created_at}

    @classmethod
    def build(cls, endpoint: WebhookEndpoint) -> WebhookOut:
        return cls(**cls.fields(endpoint))


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Signing secret (`whsec_` + base64), shown only in this response.")


class WebhookList(BaseModel):
    items: list[WebhookOut]


class AttemptOut(BaseModel):
    number: int
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    response_excerpt: str

    @classmethod
    def build(cls, attempt: WebhookAttempt) -> AttemptOut:
        return cls(number=attempt.number, started_at=attempt.started_at, duration_ms=attempt.duration_ms,
                   status_code=attempt.status_code, error=attempt.error,
                   response_excerpt=attempt.response_excerpt)


class DeliveryOut(BaseModel):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_type: str
    message_id: str = Field(description="The webhook-id header: the same on every attempt of this event.")
    status: DeliveryStatus
    attempt_count: int = Field(description="Attempts in the current series (redelivery starts a new one).")
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]
    attempts: list[AttemptOut] = Field(description="Every attempt ever made, oldest first.")

    @classmethod
    def build(cls, delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryOut:
        pending = delivery.status == DeliveryStatus.pending.value
        return cls(
            id=delivery.id, endpoint_id=delivery.endpoint_id, event_type=delivery.event_type,
            message_id=delivery.message_id, status=DeliveryStatus(delivery.status),
            attempt_count=delivery.attempts, next_attempt_at=delivery.next_attempt_at if pending else None,
            last_error=delivery.last_error, created_at=delivery.created_at,
            delivered_at=delivery.delivered_at, payload=json.loads(delivery.body),
            attempts=[AttemptOut.build(a) for a in attempts],
        )


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
