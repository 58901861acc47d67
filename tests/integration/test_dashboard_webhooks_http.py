"""The webhooks pages at the HTTP level: create (the secret on the answer page once, never again;
the API's URL check with its reason), enable/disable through PATCH /v1/webhooks/{id}, the delivery
log and redelivery, read-only sessions, and another tenant's endpoints and deliveries."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from db.models import WebhookDelivery
from db.queries.webhooks import add_delivery
from db.session import transaction
from tests.dashboard_fixtures import csrf_token, login_form_token
from tests.rules_fixtures import allow_loopback_targets  # noqa: F401 (fixture)


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(), follow_redirects=False) as c:
        yield c


def _login(client: TestClient, key: str) -> None:
    resp = client.post("/dashboard/login", data={"api_key": key, "next": "/dashboard/webhooks",
                                                 "csrf_token": login_form_token(client)})
    assert resp.status_code == 303, resp.text
    client.headers["X-CSRF-Token"] = csrf_token(client.get("/dashboard/webhooks").text)


def test_loopback_target_is_refused_with_the_setting_named(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    _login(client, key)
    resp = client.post("/dashboard/webhooks",
                       data={"url": "http://127.0.0.1:9/hook", "events": ["alert.fired"]})
    assert resp.status_code == 422
    errors = resp.text.split('id="wh-url-errors"')[1].split("</ul>")[0]
    assert "127.0.0.1" in errors or "private" in errors or "loopback" in errors
    assert 'value="http://127.0.0.1:9/hook"' in resp.text  # kept as typed
    no_events = client.post("/dashboard/webhooks", data={"url": "https://hooks.example.com/x"})
    assert no_events.status_code == 422 and 'id="wh-events-errors"' in no_events.text
    assert client.get("/v1/webhooks", headers={"X-API-Key": key}).json()["items"] == []


def test_create_secret_once_disable_deliveries_redeliver(client: TestClient, make_tenant,
                                                         allow_loopback_targets) -> None:
    tenant_id, key = make_tenant()
    _login(client, key)
    created = client.post("/dashboard/webhooks", data={
        "url": "http://127.0.0.1:9/hook", "events": ["alert.fired", "alert.resolved"], "description": "crm"})
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    secret = created.text.split('id="webhook-secret">')[1].split("<")[0]
    assert secret.startswith("whsec_")
    endpoint = client.get("/v1/webhooks", headers={"X-API-Key": key}).json()["items"][0]
    assert endpoint["events"] == ["alert.fired", "alert.resolved"] and endpoint["description"] == "crm"
    listing = client.get("/dashboard/webhooks").text
    assert secret not in listing and "whsec_" not in listing and "http://127.0.0.1:9/hook" in listing
    assert secret not in client.get(f"/dashboard/webhooks/{endpoint['id']}").text

    off = client.post(f"/dashboard/webhooks/{endpoint['id']}/enabled", data={"enabled": "false"})
    assert off.status_code == 303
    assert client.get(f"/v1/webhooks/{endpoint['id']}", headers={"X-API-Key": key}).json()["enabled"] is False
    assert "Enable http://127.0.0.1:9/hook" in client.get("/dashboard/webhooks").text

    with transaction() as s:
        delivery_id = add_delivery(s, tenant_id, uuid.UUID(endpoint["id"]), "alert.fired", "msg_1",
                                   json.dumps({"type": "alert.fired", "data": {}}))
        s.query(WebhookDelivery).filter_by(id=delivery_id).update({"status": "failed", "attempts": 3,
                                                                   "last_error": "connection refused"})
    page = client.get(f"/dashboard/webhooks/{endpoint['id']}").text
    assert f'id="delivery-{delivery_id}"' in page and "failed" in page and "connection refused" in page
    again = client.post(f"/dashboard/webhooks/deliveries/{delivery_id}/redeliver", data={})
    assert again.status_code == 303 and again.headers["location"].endswith(f"#delivery-{delivery_id}")
    api = client.get(f"/v1/webhooks/deliveries/{delivery_id}", headers={"X-API-Key": key}).json()
    assert api["status"] == "pending" and api["attempt_count"] == 0


def test_read_only_and_other_tenants(client: TestClient, make_tenant, allow_loopback_targets) -> None:
    from db.queries.tenants import create_api_key

    tenant_id, key = make_tenant()
    endpoint = client.post("/v1/webhooks", headers={"X-API-Key": key},
                           json={"url": "http://127.0.0.1:9/h", "events": ["alert.fired"]}).json()
    with transaction() as s:
        delivery_id = add_delivery(s, tenant_id, uuid.UUID(endpoint["id"]), "alert.fired", "m2", "{}")
        _, read_key = create_api_key(s, tenant_id, "viewer", scope="read")
    _login(client, read_key)
    listing = client.get("/dashboard/webhooks").text
    assert "http://127.0.0.1:9/h" in listing and "Create endpoint" not in listing and "Disable" not in listing
    assert "Redeliver" not in client.get(f"/dashboard/webhooks/{endpoint['id']}").text
    toggle = f"/dashboard/webhooks/{endpoint['id']}/enabled"
    assert client.post(toggle, data={"enabled": "false"}).status_code == 403

    _, intruder = make_tenant()
    client.cookies.clear()
    _login(client, intruder)
    assert "http://127.0.0.1:9/h" not in client.get("/dashboard/webhooks").text
    assert client.get(f"/dashboard/webhooks/{endpoint['id']}").status_code == 404
    assert client.post(toggle, data={"enabled": "false"}).status_code == 404
    assert client.post(f"/dashboard/webhooks/deliveries/{delivery_id}/redeliver", data={}).status_code == 404
    # The API's PATCH is tenant-scoped too.
    patch = client.patch(f"/v1/webhooks/{endpoint['id']}", headers={"X-API-Key": intruder},
                         json={"enabled": False})
    assert patch.status_code == 404
    assert client.get(f"/v1/webhooks/{endpoint['id']}", headers={"X-API-Key": key}).json()["enabled"] is True
    own = client.patch(f"/v1/webhooks/{endpoint['id']}", headers={"X-API-Key": key},
                       json={"enabled": False, "description": "paused"})
    assert own.status_code == 200 and own.json()["enabled"] is False and own.json()["description"] == "paused"
    assert client.patch(f"/v1/webhooks/{endpoint['id']}", headers={"X-API-Key": key},
                        json={"secret": "x"}).status_code == 422
