"""The keys page at the HTTP level: admins only (page, nav and forms), create shows the key once,
revoke ends the key's dashboard sessions at once, another tenant's keys are out of reach."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from db.session import transaction
from tests.dashboard_fixtures import csrf_token, login_form_token


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(), follow_redirects=False) as c:
        yield c


def _login(client: TestClient, key: str) -> None:
    resp = client.post("/dashboard/login", data={"api_key": key, "next": "/dashboard/recordings",
                                                 "csrf_token": login_form_token(client)})
    assert resp.status_code == 303, resp.text
    client.headers["X-CSRF-Token"] = csrf_token(client.get("/dashboard/recordings").text)


def _key(tenant_id, scope: str, name: str) -> str:
    from db.queries.tenants import create_api_key

    with transaction() as s:
        return create_api_key(s, tenant_id, name, scope=scope)[1]


def test_admin_creates_and_revokes_keys(client: TestClient, make_tenant) -> None:
    from api.main import create_app

    tenant_id, write_key = make_tenant()
    admin_key = _key(tenant_id, "admin", "ops lead")
    _login(client, write_key)
    assert 'href="/dashboard/keys"' not in client.get("/dashboard/recordings").text
    assert client.get("/dashboard/keys").status_code == 403
    assert client.post("/dashboard/keys", data={"name": "x"}).status_code == 403

    client.cookies.clear()
    _login(client, admin_key)
    page = client.get("/dashboard/keys")
    assert page.status_code == 200 and "ops lead" in page.text and "this session's key" in page.text
    assert admin_key not in page.text and 'href="/dashboard/keys"' in page.text
    created = client.post("/dashboard/keys", data={"name": "wallboard", "scope": "read"})
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"
    new_key = created.text.split('id="new-key">')[1].split("<")[0]
    assert new_key.startswith("cpk_")
    assert new_key not in client.get("/dashboard/keys").text  # shown once
    listed = client.get("/v1/keys", headers={"X-API-Key": admin_key}).json()["items"]
    wallboard = next(k for k in listed if k["name"] == "wallboard")
    assert wallboard["scope"] == "read"
    bad = client.post("/dashboard/keys", data={"name": "x", "scope": "root"})
    assert bad.status_code == 422 and "read" in bad.text

    # The new key's dashboard session ends the moment it is revoked.
    with TestClient(create_app(), follow_redirects=False) as other:
        _login(other, new_key)
        assert other.get("/dashboard/recordings").status_code == 200
        revoked = client.post(f"/dashboard/keys/{wallboard['id']}/revoke", data={})
        assert revoked.status_code == 303
        assert other.get("/dashboard/recordings").status_code == 303  # back to the login form
    assert "revoked" in client.get("/dashboard/keys").text.split(f'id="key-{wallboard["id"]}"')[1][:1500]


def test_other_tenants_keys_are_out_of_reach(client: TestClient, make_tenant) -> None:
    owner, owner_key = make_tenant()
    other_tenant, _ = make_tenant()
    other_admin = _key(other_tenant, "admin", "their admin")
    _login(client, other_admin)
    owner_admin = _key(owner, "admin", "owner admin")
    listed = client.get("/v1/keys", headers={"X-API-Key": owner_admin}).json()["items"]
    victim = listed[0]["id"]
    assert "owner admin" not in client.get("/dashboard/keys").text
    assert client.post(f"/dashboard/keys/{victim}/revoke", data={}).status_code == 404
    assert client.get("/v1/recordings", headers={"X-API-Key": owner_key}).status_code == 200
