"""Delete actions in the dashboard, where an operator looks for them: a call from its page, a rule
from its editor, a webhook endpoint from the list and its deliveries page. Each runs the handler of
the matching DELETE /v1 endpoint; read-only sessions see no delete form and are refused; another
tenant's ids answer 404 and delete nothing; a form without the session's CSRF token is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from callpulse.settings import get_settings
from db.models import Alert, Recording, Rule, Segment, WebhookEndpoint
from db.queries.tenants import create_api_key
from db.session import transaction
from tests.dashboard_fixtures import csrf_token, login_form_token, store_alert, store_call
from tests.rules_fixtures import allow_loopback_targets  # noqa: F401 (fixture)
from worker.pipeline.media.audio_store import recording_dir


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(), follow_redirects=False) as c:
        yield c


def _login(client: TestClient, key: str) -> None:
    client.cookies.clear()
    client.headers.pop("X-CSRF-Token", None)
    resp = client.post("/dashboard/login", data={"api_key": key, "next": "/dashboard",
                                                 "csrf_token": login_form_token(client)})
    assert resp.status_code == 303, resp.text
    client.headers["X-CSRF-Token"] = csrf_token(client.get("/dashboard/rules").text)


def _exists(model: type, row_id: uuid.UUID) -> bool:
    with transaction() as s:
        return s.get(model, row_id) is not None


def _read_key(tenant_id: uuid.UUID) -> str:
    with transaction() as s:
        _, key = create_api_key(s, tenant_id, "wallboard", scope="read")
    return key


def test_delete_a_call_from_its_page(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("agent", None, 2.0, None),
                                                           ("customer", "angry", 4.0, -0.6)])
    alert_id = store_alert(tenant_id, rec_id)
    folder = recording_dir(get_settings().resolved_media_dir, tenant_id, rec_id)
    folder.mkdir(parents=True)
    (folder / "media.wav").write_bytes(b"RIFF")
    action = f'action="/dashboard/recordings/{rec_id}/delete"'

    # Another tenant's session: 404, nothing deleted. A read-only session: no form, refused.
    other_tenant, other_key = make_tenant()
    _login(client, other_key)
    assert client.post(f"/dashboard/recordings/{rec_id}/delete").status_code == 404
    _login(client, _read_key(tenant_id))
    assert action not in client.get(f"/dashboard/recordings/{rec_id}").text
    assert client.post(f"/dashboard/recordings/{rec_id}/delete").status_code == 403
    assert _exists(Recording, rec_id) and folder.is_dir()

    _login(client, key)
    page = client.get(f"/dashboard/recordings/{rec_id}").text
    assert action in page and "Delete this call…" in page
    # Without the session's token the form is refused.
    forged = client.post(f"/dashboard/recordings/{rec_id}/delete", headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 403 and _exists(Recording, rec_id)
    done = client.post(f"/dashboard/recordings/{rec_id}/delete")
    assert done.status_code == 200 and "Call deleted" in done.text
    assert not _exists(Recording, rec_id) and not _exists(Alert, alert_id) and not folder.exists()
    with transaction() as s:
        assert s.query(Segment).filter_by(recording_id=rec_id).count() == 0
    assert client.get(f"/dashboard/recordings/{rec_id}").status_code == 404
    assert client.post(f"/dashboard/recordings/{rec_id}/delete").status_code == 404
    assert other_tenant != tenant_id


def test_a_call_still_streaming_is_not_deleted(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("customer", "neutral", 2.0, 0.0)], status="live")
    _login(client, key)
    assert f"/dashboard/recordings/{rec_id}/delete" not in client.get(f"/dashboard/recordings/{rec_id}").text
    refused = client.post(f"/dashboard/recordings/{rec_id}/delete")
    assert refused.status_code == 409 and "still streaming" in refused.text
    assert _exists(Recording, rec_id)
    # Once it has ended it can go.
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == rec_id).values(status="done"))
    assert client.post(f"/dashboard/recordings/{rec_id}/delete").status_code == 200
    assert not _exists(Recording, rec_id)


def test_delete_a_rule_from_its_editor_keeps_its_alerts(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("customer", "angry", 4.0, -0.6)])
    alert_id = store_alert(tenant_id, rec_id, rule_name="Angry customer")
    with transaction() as s:
        alert = s.get(Alert, alert_id)
        assert alert is not None
        rule_id = alert.rule_id
    action = f'action="/dashboard/rules/{rule_id}/delete"'

    _, other_key = make_tenant()
    _login(client, other_key)
    assert client.post(f"/dashboard/rules/{rule_id}/delete").status_code == 404
    _login(client, _read_key(tenant_id))
    assert action not in client.get(f"/dashboard/rules/{rule_id}").text
    assert client.post(f"/dashboard/rules/{rule_id}/delete").status_code == 403
    assert client.get(f"/v1/rules/{rule_id}", headers={"X-API-Key": key}).status_code == 200

    _login(client, key)
    assert action not in client.get("/dashboard/rules/new").text  # nothing to delete yet
    assert action in client.get(f"/dashboard/rules/{rule_id}").text
    done = client.post(f"/dashboard/rules/{rule_id}/delete")
    assert done.status_code == 303 and done.headers["location"] == "/dashboard/rules"
    with transaction() as s:
        rule = s.get(Rule, rule_id)
        assert rule is not None and rule.deleted_at is not None and not rule.enabled  # kept for its alerts
    assert _exists(Alert, alert_id)  # the alerts it fired stay
    assert "Angry customer" not in client.get("/dashboard/rules").text
    assert client.get(f"/v1/rules/{rule_id}", headers={"X-API-Key": key}).status_code == 404


def test_delete_a_webhook_endpoint(client: TestClient, make_tenant, allow_loopback_targets) -> None:
    tenant_id, key = make_tenant()
    created = client.post("/v1/webhooks", headers={"X-API-Key": key},
                          json={"url": "http://127.0.0.1:9/hook", "events": ["alert.fired"]})
    assert created.status_code == 201, created.text
    endpoint_id = uuid.UUID(created.json()["id"])
    action = f'action="/dashboard/webhooks/{endpoint_id}/delete"'

    _, other_key = make_tenant()
    _login(client, other_key)
    assert client.post(f"/dashboard/webhooks/{endpoint_id}/delete").status_code == 404
    _login(client, _read_key(tenant_id))
    assert action not in client.get("/dashboard/webhooks").text
    assert action not in client.get(f"/dashboard/webhooks/{endpoint_id}").text
    assert client.post(f"/dashboard/webhooks/{endpoint_id}/delete").status_code == 403
    assert _exists(WebhookEndpoint, endpoint_id)

    _login(client, key)
    assert action in client.get("/dashboard/webhooks").text  # in the list and on its own page
    assert action in client.get(f"/dashboard/webhooks/{endpoint_id}").text
    done = client.post(f"/dashboard/webhooks/{endpoint_id}/delete")
    assert done.status_code == 303 and done.headers["location"] == "/dashboard/webhooks"
    assert not _exists(WebhookEndpoint, endpoint_id)
    assert client.get(f"/v1/webhooks/{endpoint_id}", headers={"X-API-Key": key}).status_code == 404
