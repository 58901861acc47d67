"""The rules pages at the HTTP level: create and edit through the editor (the API's validation
messages next to their field, the text kept as typed), a backtest of unsaved text over a period
that stores nothing, versions, enable/disable, read-only sessions, and another tenant's rules."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from db.models import Alert, Rule
from db.session import transaction
from tests.dashboard_fixtures import csrf_token, login_form_token, store_call

RULE_YAML = "severity: high\nwhen:\n  label: angry\n"


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(), follow_redirects=False) as c:
        yield c


def _login(client: TestClient, key: str) -> None:
    resp = client.post("/dashboard/login", data={"api_key": key, "next": "/dashboard/rules",
                                                 "csrf_token": login_form_token(client)})
    assert resp.status_code == 303, resp.text
    client.headers["X-CSRF-Token"] = csrf_token(client.get("/dashboard/rules").text)


def _form(**fields: str) -> dict[str, str]:
    today = datetime.now(UTC).date().isoformat()
    return {"name": "Angry customer", "description": "", "enabled": "true", "definition": RULE_YAML,
            "from": today, "to": today, **fields}


def test_create_with_an_error_then_fixed_then_a_new_version(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    _login(client, key)
    assert "Create rule" in client.get("/dashboard/rules/new").text
    broken = "severity: high\nwhen:\n  sustained:\n    seconds: -5\n    condition: {label: angry}\n"
    refused = client.post("/dashboard/rules/save", data=_form(definition=broken))
    assert refused.status_code == 422
    # The API's message, beside the definition, and the text as typed.
    errors = refused.text.split('id="definition-errors"')[1].split("</ul>")[0]
    assert "when.sustained.seconds" in errors
    assert "seconds: -5" in refused.text and 'aria-invalid="true"' in refused.text
    nameless = client.post("/dashboard/rules/save", data=_form(name=""))
    assert nameless.status_code == 422 and 'id="name-errors"' in nameless.text
    yaml_error = client.post("/dashboard/rules/save", data=_form(definition="when: [unclosed"))
    assert yaml_error.status_code == 422 and 'id="definition-errors"' in yaml_error.text

    created = client.post("/dashboard/rules/save", data=_form())
    assert created.status_code == 303
    rule_id = uuid.UUID(created.headers["location"].split("/dashboard/rules/")[1].split("?")[0])
    assert created.headers["location"].endswith("?saved=1")
    api = client.get(f"/v1/rules/{rule_id}", headers={"X-API-Key": key}).json()
    assert api["definition"] == {"severity": "high", "when": {"label": "angry"}} and api["version"] == 1

    page = client.get(f"/dashboard/rules/{rule_id}?saved=1").text
    assert "Saved: version 1 is live" in page and "label: angry" in page
    edited = client.post("/dashboard/rules/save", data=_form(
        rule_id=str(rule_id), definition="severity: critical\nwhen:\n  label: sad\n"))
    assert edited.status_code == 303 and edited.headers["location"].endswith("?saved=2")
    page = client.get(f"/dashboard/rules/{rule_id}").text
    assert "Version 2 · critical" in page and "Version 1 · high" in page and "· current" in page
    assert client.get("/v1/rules", headers={"X-API-Key": key}).json()["items"][0]["version"] == 2


def test_backtest_unsaved_text_over_a_period_stores_nothing(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant(["customer"])
    today = datetime.now(UTC)
    angry = store_call(tenant_id, today, {}, [("customer", "angry", 4.0, -0.6)])
    store_call(tenant_id, today, {}, [("customer", "happy", 4.0, 0.6)])
    _login(client, key)
    resp = client.post("/dashboard/rules/backtest", data=_form(name=""))
    assert resp.status_code == 200, resp.text
    summary = resp.text.split('class="backtest-summary"')[1].split("</p>")[0]
    assert re.search(r"Would fire <strong>1</strong> time on <strong>1</strong> of 2 calls", summary), summary
    assert f'href="/dashboard/recordings/{angry}#t=' in resp.text
    assert "label: angry" in resp.text  # the editor keeps the text
    with transaction() as s:
        assert s.query(Rule).filter_by(tenant_id=tenant_id).count() == 0
        assert s.query(Alert).filter_by(tenant_id=tenant_id).count() == 0
    bad = client.post("/dashboard/rules/backtest", data=_form(**{"from": "2026-02-01", "to": "2026-01-01"}))
    assert bad.status_code == 422 and "ends before it starts" in bad.text
    invalid = client.post("/dashboard/rules/backtest", data=_form(definition="when: {label: furious}"))
    assert invalid.status_code == 422 and 'id="definition-errors"' in invalid.text


def test_enable_disable_read_only_and_other_tenants(client: TestClient, make_tenant) -> None:
    from db.queries.tenants import create_api_key

    tenant_id, key = make_tenant()
    _login(client, key)
    location = client.post("/dashboard/rules/save", data=_form()).headers["location"]
    rule_id = location.split("/")[-1].split("?")[0]
    off = client.post(f"/dashboard/rules/{rule_id}/enabled", data={"enabled": "false"})
    assert off.status_code == 303
    assert client.get(f"/v1/rules/{rule_id}", headers={"X-API-Key": key}).json()["enabled"] is False
    listing = client.get("/dashboard/rules").text
    assert "disabled" in listing and "Enable Angry customer" in listing

    with transaction() as s:
        _, read_key = create_api_key(s, tenant_id, "viewer", scope="read")
    client.cookies.clear()
    _login(client, read_key)
    listing = client.get("/dashboard/rules").text
    assert "Angry customer" in listing and "New rule" not in listing and "Enable Angry" not in listing
    editor = client.get(f"/dashboard/rules/{rule_id}").text
    assert "Save as a new version" not in editor and ">Backtest</button>" in editor
    assert client.post("/dashboard/rules/save", data=_form()).status_code == 403
    assert client.post(f"/dashboard/rules/{rule_id}/enabled", data={"enabled": "true"}).status_code == 403
    assert client.post("/dashboard/rules/backtest", data=_form()).status_code == 200  # reads only

    _, intruder = make_tenant()
    client.cookies.clear()
    _login(client, intruder)
    assert client.get(f"/dashboard/rules/{rule_id}").status_code == 404
    assert "Angry customer" not in client.get("/dashboard/rules").text
    assert client.post("/dashboard/rules/save", data=_form(rule_id=rule_id)).status_code == 404
    assert client.post(f"/dashboard/rules/{rule_id}/enabled", data={"enabled": "true"}).status_code == 404
    assert client.get(f"/v1/rules/{rule_id}", headers={"X-API-Key": key}).json()["enabled"] is False
