"""/v1/webhooks: endpoints (signed per Standard Webhooks), the delivery log, redelivery, and the
JSON Schema of every event payload."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy.orm import Session

from api import rate_limit
from api.deps import SessionDep, SettingsDep, TenantDep, validation_error
from api.schemas import ErrorOut
from api.schemas_webhooks import (
    DeliveryList,
    DeliveryOut,
    WebhookCreated,
    WebhookIn,
    WebhookList,
    WebhookOut,
    WebhookPatch,
)
from db.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, utcnow
from db.queries import webhooks as queries
from worker.jobs.enqueue import enqueue_deliveries
from worker.notify import events
from worker.notify import webhooks as notify

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

NOT_FOUND = "webhook endpoint not found"
DELIVERY_NOT_FOUND = "webhook delivery not found"
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked API key"},
    404: {"model": ErrorOut, "description": "No such endpoint or delivery for this tenant"},
}


def _tenant_endpoint(session: Session, tenant_id: uuid.UUID, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = queries.get_endpoint(session, tenant_id, endpoint_id)
    if endpoint is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
    return endpoint


def _delivery_out(session: Session, delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut.build(delivery, queries.attempts_of(session, [delivery.id])[delivery.id])


@router.get("/schemas", summary="JSON Schema of each event's payload (the request body we POST)")
def payload_schemas() -> dict[str, Any]:
    return events.payload_schemas()


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookCreated,
             responses={401: ERRORS[401]}, summary="Register an endpoint; the answer holds its secret")
def create_endpoint(session: SessionDep, tenant: TenantDep, settings: SettingsDep, body: WebhookIn
                    ) -> WebhookCreated:
    try:
        notify.resolve_target(body.url, settings.webhook_allow_private_targets)
    except notify.TargetRefused as exc:
        raise validation_error(("body", "url"), str(exc), "url_refused") from exc
    endpoint = queries.create_endpoint(session, tenant.id, body.url, list(body.events), body.description,
                                       notify.new_secret())
    return WebhookCreated(**WebhookOut.fields(endpoint), secret=endpoint.secret)


@router.get("", response_model=WebhookList, responses={401: ERRORS[401]}, summary="The tenant's endpoints")
def list_endpoints(session: SessionDep, tenant: TenantDep) -> WebhookList:
    return WebhookList(items=[WebhookOut.build(e) for e in queries.list_endpoints(session, tenant.id)])


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut, responses=ERRORS,
            summary="One delivery with every attempt")
def get_delivery(session: SessionDep, tenant: TenantDep, delivery_id: uuid.UUID) -> DeliveryOut:
    delivery = queries.get_delivery(session, tenant.id, delivery_id)
    if delivery is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=DELIVERY_NOT_FOUND)
    return _delivery_out(session, delivery)


@router.post("/deliveries/{delivery_id}/redeliver", status_code=status.HTTP_202_ACCEPTED,
             response_model=DeliveryOut, responses=ERRORS,
             summary="Send a delivery again (same webhook-id), with a fresh series of retries")
def redeliver(session: SessionDep, tenant: TenantDep, settings: SettingsDep, delivery_id: uuid.UUID
              ) -> DeliveryOut:
    """Throttled: each redelivery restarts the whole series of attempts, so unthrottled it would
    turn one API call into a stream of requests at the receiver."""
    delivery = queries.get_delivery(session, tenant.id, delivery_id, for_update=True)
    if delivery is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=DELIVERY_NOT_FOUND)
    if (wait := rate_limit.count(settings, rate_limit.redeliveries_per_tenant(settings), str(tenant.id))):
        raise rate_limit.too_many(wait, "redeliveries for this tenant")
    if (wait := rate_limit.count(settings, rate_limit.redeliveries_per_delivery(settings), str(delivery.id))):
        raise rate_limit.too_many(wait, "redeliveries of this delivery")
    delivery.status, delivery.attempts = DeliveryStatus.pending.value, 0
    delivery.next_attempt_at, delivery.updated_at = utcnow(), utcnow()
    out = _delivery_out(session, delivery)
    session.commit()  # the worker must see the row pending before it gets the message
    enqueue_deliveries([delivery.id])
    return out


@router.get("/{endpoint_id}", response_model=WebhookOut, responses=ERRORS, summary="One endpoint")
def get_endpoint(session: SessionDep, tenant: TenantDep, endpoint_id: uuid.UUID) -> WebhookOut:
    return WebhookOut.build(_tenant_endpoint(session, tenant.id, endpoint_id))


@router.patch("/{endpoint_id}", response_model=WebhookOut, responses=ERRORS,
              summary="Enable or disable an endpoint, or change its description")
def patch_endpoint(session: SessionDep, tenant: TenantDep, endpoint_id: uuid.UUID, body: WebhookPatch
                   ) -> WebhookOut:
    endpoint = _tenant_endpoint(session, tenant.id, endpoint_id)
    if body.enabled is not None:
        endpoint.enabled = body.enabled
    if body.description is not None:
        endpoint.description = body.description
    session.flush()
    return WebhookOut.build(endpoint)


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS,
               summary="Remove an endpoint and its delivery log")
def delete_endpoint(session: SessionDep, tenant: TenantDep, endpoint_id: uuid.UUID) -> Response:
    if not queries.delete_endpoint(session, tenant.id, endpoint_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryList, responses=ERRORS,
            summary="The endpoint's delivery log, newest first")
def list_deliveries(
    session: SessionDep, tenant: TenantDep, endpoint_id: uuid.UUID,
    status_filter: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeliveryList:
    endpoint = _tenant_endpoint(session, tenant.id, endpoint_id)
    wanted = status_filter.value if status_filter else None
    rows = queries.list_deliveries(session, endpoint.id, wanted, limit)
    attempts = queries.attempts_of(session, [d.id for d in rows])
    return DeliveryList(items=[DeliveryOut.build(d, attempts[d.id]) for d in rows])
