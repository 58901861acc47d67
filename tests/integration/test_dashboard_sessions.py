"""Attacks on the dashboard's session and forms, at the HTTP level against the real app and
Postgres: a cookie kept after logout, after key revocation and after expiry; login CSRF (the
attacker's key posted from another page), upload and logout CSRF, a token from another session, and
forms sent from another origin or site. Each of these worked before sessions lived in the database
and forms carried tokens."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from api.dashboard_auth import COOKIE_NAME
from callpulse.cli import main as cli
from db.models import ApiKey, DashboardSession, Recording
from db.queries.tenants import revoke_api_key
from db.session import transaction
from tests.dashboard_fixtures import csrf_token, login_form_token
from tests.support import EXAMPLE


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(), follow_redirects=False, base_url="http://dash.test") as c:
        yield c


def _new_client() -> TestClient:
    from api.main import create_app

    return TestClient(create_app(), follow_redirects=False, base_url="http://dash.test")


def _login(client: TestClient, key: str) -> str:
    """Log in as a browser does; returns the session's form token (from a page)."""
    resp = client.post("/dashboard/login", data={"api_key": key, "csrf_token": login_form_token(client)})
    assert resp.status_code == 303, resp.text
    page = client.get("/dashboard/recordings")
    assert page.status_code == 200
    return csrf_token(page.text)


def _key_id(tenant_id: uuid.UUID) -> uuid.UUID:
    with transaction() as s:
        key_id = s.scalar(select(ApiKey.id).where(ApiKey.tenant_id == tenant_id))
    assert key_id is not None
    return key_id


def _recordings(tenant_id: uuid.UUID) -> int:
    with transaction() as s:
        count = s.scalar(select(func.count()).select_from(Recording).where(Recording.tenant_id == tenant_id))
    return int(count or 0)


def test_a_cookie_kept_after_logout_opens_nothing(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    token = _login(client, key)
    stolen = client.cookies[COOKIE_NAME]
    assert client.post("/dashboard/logout", data={"csrf_token": token}).status_code == 303
    with _new_client() as thief:
        thief.cookies.set(COOKIE_NAME, stolen, path="/dashboard")
        assert thief.get("/dashboard/recordings").status_code == 303
        assert thief.get("/dashboard/live/recordings", params={"ids": str(uuid.uuid4())}).status_code == 401


def test_revoking_a_key_ends_all_its_sessions(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    _login(client, key)
    with _new_client() as second:
        _login(second, key)
        with transaction() as s:
            key_row = s.get(ApiKey, _key_id(tenant_id))
            assert key_row is not None and revoke_api_key(s, key_row)
            assert s.scalar(select(func.count()).select_from(DashboardSession)
                            .where(DashboardSession.tenant_id == tenant_id)) == 0
        assert second.get("/dashboard/recordings").status_code == 303
    assert client.get("/dashboard/recordings").status_code == 303


def test_keys_revoke_cli_ends_sessions(client: TestClient, make_tenant, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    tenant_id, key = make_tenant()
    _login(client, key)
    assert cli(["keys", "revoke", str(_key_id(tenant_id))]) == 0
    assert "dashboard sessions are refused" in capsys.readouterr().err
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(DashboardSession)
                        .where(DashboardSession.tenant_id == tenant_id)) == 0
    assert client.get("/dashboard/recordings").status_code == 303
    assert cli(["keys", "revoke", str(uuid.uuid4())]) == 1


def test_an_expired_session_is_refused(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    _login(client, key)
    with transaction() as s:
        s.execute(update(DashboardSession).where(DashboardSession.tenant_id == tenant_id)
                  .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert client.get("/dashboard/recordings").status_code == 303


def test_login_csrf_the_attackers_key_posted_without_the_login_token(client: TestClient, make_tenant) -> None:
    _, attacker_key = make_tenant()
    # A page elsewhere can post the form, but cannot read the victim's login page or cookie.
    resp = client.post("/dashboard/login", data={"api_key": attacker_key, "next": "/dashboard"})
    assert resp.status_code == 403 and "token" in resp.json()["detail"]
    assert COOKIE_NAME not in client.cookies
    # Nor does the attacker's own login token help: it is bound to the attacker's browser.
    with _new_client() as attacker:
        stolen = login_form_token(attacker)
    resp = client.post("/dashboard/login", data={"api_key": attacker_key, "csrf_token": stolen})
    assert resp.status_code == 403
    assert COOKIE_NAME not in client.cookies
    assert client.get("/dashboard/recordings").status_code == 303


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "http://dash.test:8081"},  # same site, another port: SameSite=Lax would let it in
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
])
def test_forms_from_another_origin_are_refused_even_with_a_token(client: TestClient, make_tenant,
                                                                  headers: dict[str, str]) -> None:
    _, key = make_tenant()
    token = login_form_token(client)
    resp = client.post("/dashboard/login", data={"api_key": key, "csrf_token": token}, headers=headers)
    assert resp.status_code == 403 and "another" in resp.json()["detail"]
    assert COOKIE_NAME not in client.cookies
    own = {"Origin": "http://dash.test", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/dashboard/login", data={"api_key": key, "csrf_token": token},
                       headers=own).status_code == 303


def test_upload_and_logout_need_this_sessions_token(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    token = _login(client, key)
    _, other_key = make_tenant()
    with _new_client() as other:
        other_token = _login(other, other_key)
    for sent in ({}, {"csrf_token": ""}, {"csrf_token": other_token}):
        with EXAMPLE.open("rb") as media:
            resp = client.post("/dashboard/upload", data={"layout": "mono", **sent},
                               files={"file": ("call.wav", media, "audio/wav")})
        assert resp.status_code == 403, sent
        assert client.post("/dashboard/logout", data=sent).status_code == 403
    assert _recordings(tenant_id) == 0
    assert client.get("/dashboard/recordings").status_code == 200  # logout CSRF ended nothing
    # The page's own token works, also as the header scripts send.
    assert client.post("/dashboard/logout", headers={"X-CSRF-Token": token}).status_code == 303
    assert client.get("/dashboard/recordings").status_code == 303


def test_a_post_without_a_session_goes_to_the_login_form(client: TestClient) -> None:
    resp = client.post("/dashboard/upload", data={"csrf_token": "x"})
    assert resp.status_code == 303 and resp.headers["location"].startswith("/dashboard/login")


def test_a_second_login_replaces_the_first_session(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    _login(client, key)
    first = client.cookies[COOKIE_NAME]
    _login(client, key)
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(DashboardSession)
                        .where(DashboardSession.tenant_id == tenant_id)) == 1
    with _new_client() as old:
        old.cookies.set(COOKIE_NAME, first, path="/dashboard")
        assert old.get("/dashboard/recordings").status_code == 303


def test_pages_name_the_sessions_key_without_its_secret(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    _login(client, key)
    page = client.get("/dashboard/recordings").text
    assert f"test (key {_key_id(tenant_id).hex[:8]})" in page
    assert key[4:12] not in page and key[:12] not in page
