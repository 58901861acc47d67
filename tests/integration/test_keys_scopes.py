"""API key scopes and key management: read keys change nothing, admin keys manage keys through
/v1/keys, revoked keys and their dashboard sessions stop at once; the operator's CLI for keys and
tenants."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.deps import READ_ONLY_POSTS, SAFE_METHODS
from db.models import ApiKey
from db.queries.tenants import create_api_key, create_tenant
from db.session import transaction
from tests.dashboard_fixtures import csrf_token, login_form_token


@pytest.fixture(scope="module")
def app():
    from api.main import create_app

    return create_app()


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as c:
        yield c


@pytest.fixture
def tenant_keys() -> dict[str, str]:
    """One tenant with a key of each scope: {"read": key, "write": key, "admin": key, "tenant": id}."""
    with transaction() as s:
        tenant = create_tenant(s, f"t-{uuid.uuid4().hex[:10]}")
        keys = {scope: create_api_key(s, tenant.id, f"{scope} key", scope)[1]
                for scope in ("read", "write", "admin")}
        keys["tenant"] = str(tenant.id)
    return keys


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _write_routes(app) -> list[tuple[str, str]]:
    # The OpenAPI document lists every /v1 route with its methods, however routers are nested.
    routes = []
    for path, operations in app.openapi()["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method in sorted(m.upper() for m in operations):
            if method not in SAFE_METHODS and path not in READ_ONLY_POSTS:
                routes.append((method, path))
    return routes


def _concrete(path: str) -> str:
    # Any id will do: the scope is checked before the route looks anything up.
    parts = [str(uuid.uuid4()) if p.startswith("{") else p for p in path.split("/")]
    return "/".join(parts)


def test_every_write_route_refuses_a_read_key_with_a_reason(app, client: TestClient, tenant_keys) -> None:
    routes = _write_routes(app)
    # The enumeration must see the routes it protects, or the test proves nothing.
    assert ("POST", "/v1/recordings") in routes and ("DELETE", "/v1/recordings/{recording_id}") in routes
    assert ("PUT", "/v1/segments/{segment_id}/label") in routes and len(routes) >= 15
    for method, path in routes:
        url = _concrete(path)
        read = client.request(method, url, headers=_auth(tenant_keys["read"]), json={})
        assert read.status_code == 403, (method, path, read.status_code, read.text)
        assert "scope 'read'" in read.json()["detail"] and "needs a key with scope" in read.json()["detail"]
        if not path.startswith("/v1/keys"):
            # A write key gets past the scope check (to a 404/422 for the made-up ids and body).
            wrote = client.request(method, url, headers=_auth(tenant_keys["write"]), json={})
            assert wrote.status_code != 403, (method, path, wrote.text)


def test_read_key_reads_and_backtests(client: TestClient, tenant_keys) -> None:
    headers = _auth(tenant_keys["read"])
    assert client.get("/v1/recordings", headers=headers).status_code == 200
    assert client.get("/v1/rules", headers=headers).status_code == 200
    # A backtest creates nothing, so a read key may run it (a body problem, not a 403).
    resp = client.post(f"/v1/rules/{uuid.uuid4()}/backtest", headers=headers, json={})
    assert resp.status_code in (404, 422), resp.text


def test_keys_endpoint_needs_admin_and_never_shows_secrets(client: TestClient, tenant_keys) -> None:
    assert client.get("/v1/keys", headers=_auth(tenant_keys["write"])).status_code == 403
    admin = _auth(tenant_keys["admin"])
    listed = client.get("/v1/keys", headers=admin)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert sorted(k["scope"] for k in items) == ["admin", "read", "write"]
    body = listed.text
    for scope in ("read", "write", "admin"):
        assert tenant_keys[scope] not in body and tenant_keys[scope][:12] not in body
    assert all(set(k) == {"id", "name", "scope", "created_at", "last_used_at", "revoked_at"} for k in items)
    admin_row = next(k for k in items if k["scope"] == "admin")
    assert admin_row["last_used_at"] is not None  # this very request used it

    created = client.post("/v1/keys", headers=admin, json={"name": "bi export", "scope": "read"})
    assert created.status_code == 201, created.text
    new = created.json()
    assert new["key"].startswith("cpk_") and new["scope"] == "read"
    assert client.get("/v1/recordings", headers=_auth(new["key"])).status_code == 200
    again = client.get("/v1/keys", headers=admin).text
    assert new["key"] not in again and new["id"] in again

    bad = client.post("/v1/keys", headers=admin, json={"scope": "root"})
    assert bad.status_code == 422
    assert client.post("/v1/keys", headers=admin, json={"name": "a\x00b"}).status_code == 422


def test_revoking_a_key_ends_its_api_use_and_dashboard_session(client: TestClient, tenant_keys) -> None:
    admin = _auth(tenant_keys["admin"])
    victim = tenant_keys["write"]
    login = client.post("/dashboard/login", data={"api_key": victim, "next": "/dashboard/recordings",
                                                  "csrf_token": login_form_token(client)})
    assert login.status_code == 303
    assert client.get("/dashboard/recordings").status_code == 200
    items = client.get("/v1/keys", headers=admin).json()["items"]
    key_id = next(k["id"] for k in items if k["scope"] == "write")

    revoked = client.post(f"/v1/keys/{key_id}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert client.get("/v1/recordings", headers=_auth(victim)).status_code == 401
    page = client.get("/dashboard/recordings")  # the same browser, its cookie unchanged
    assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
    first = revoked.json()["revoked_at"]
    assert client.post(f"/v1/keys/{key_id}/revoke", headers=admin).json()["revoked_at"] == first


def test_keys_of_another_tenant_are_invisible(client: TestClient, tenant_keys) -> None:
    with transaction() as s:
        other = create_tenant(s, f"t-{uuid.uuid4().hex[:10]}")
        other_row, other_key = create_api_key(s, other.id, "theirs", "admin")
        other_id = other_row.id
    admin = _auth(tenant_keys["admin"])
    assert str(other_id) not in client.get("/v1/keys", headers=admin).text
    assert client.post(f"/v1/keys/{other_id}/revoke", headers=admin).status_code == 404
    assert client.get("/v1/recordings", headers=_auth(other_key)).status_code == 200  # still valid


def test_read_key_dashboard_session_cannot_upload(client: TestClient, tenant_keys) -> None:
    assert client.post("/dashboard/login", data={"api_key": tenant_keys["read"],
                                                 "csrf_token": login_form_token(client)}).status_code == 303
    page = client.get("/dashboard/recordings")
    assert page.status_code == 200  # it may look
    resp = client.post("/dashboard/upload", files={"file": ("a.wav", b"RIFF0000", "audio/wav")},
                       data={"csrf_token": csrf_token(page.text)})
    assert resp.status_code == 403 and "read-only" in resp.json()["detail"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callpulse.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


def test_cli_keys_and_tenants() -> None:
    name = f"ops-{uuid.uuid4().hex[:6]}"
    assert _cli("tenants", "create", name).returncode == 0
    made = _cli("keys", "create", "--tenant", name, "--scope", "read", "--name", "dash")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    default = _cli("keys", "create", "--tenant", name)
    assert default.returncode == 0 and "created write API key" in default.stderr

    listed = _cli("keys", "list", "--tenant", name, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["scope"] for r in rows] == ["read", "write"] and rows[0]["name"] == "dash"
    assert set(rows[0]) == {"id", "name", "scope", "created", "last_used", "revoked"}
    assert secret not in listed.stdout and secret[:12] not in listed.stdout
    table = _cli("keys", "list", "--tenant", name)
    assert table.stdout.splitlines()[0].split() == ["id", "name", "scope", "created", "last_used", "revoked"]

    revoked = _cli("keys", "revoke", rows[0]["id"])
    assert revoked.returncode == 0 and "revoked API key" in revoked.stderr
    with transaction() as s:
        row = s.get(ApiKey, uuid.UUID(rows[0]["id"]))
        assert row is not None and row.revoked_at is not None
    assert "already revoked" in _cli("keys", "revoke", rows[0]["id"]).stderr
    assert _cli("keys", "revoke", secret).returncode == 2  # the secret is not an id
    assert _cli("keys", "revoke", str(uuid.uuid4())).returncode == 1
    assert _cli("keys", "list", "--tenant", "no-such-tenant").returncode == 1

    updated = _cli("tenants", "update", name, "--analyzed-roles", "customer,unknown", "--skip-unknown-roles",
                   "--media-retention-days", "30", "--data-retention-days", "365", "--format", "json")
    assert updated.returncode == 0, updated.stderr
    obj = json.loads(updated.stdout)
    assert obj["analyzed_roles"] == ["customer", "unknown"] and obj["analyze_unknown_roles"] is False
    assert (obj["media_retention_days"], obj["data_retention_days"]) == (30, 365)
    cleared = _cli("tenants", "update", name, "--media-retention-days", "none", "--format", "json")
    assert json.loads(cleared.stdout)["media_retention_days"] is None
    assert json.loads(cleared.stdout)["data_retention_days"] == 365  # untouched options stay
    assert _cli("tenants", "update", name, "--data-retention-days", "0").returncode == 2
    everyone = [json.loads(line) for line in _cli("tenants", "list", "--format", "json").stdout.splitlines()]
    assert any(t["name"] == name and t["data_retention_days"] == 365 for t in everyone)
