"""The supervisor workspace at the HTTP level (no browser): acting on alerts from the dashboard
(forms and the script's fragment answers), the feed's filters, tenant scoping of every action, and
the site's own pages (`/`, the favicon, /docs with local assets only)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from db.models import Alert
from db.session import transaction
from tests.dashboard_fixtures import store_alert, store_call


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(), follow_redirects=False) as c:
        yield c


def _login(client: TestClient, key: str) -> None:
    resp = client.post("/dashboard/login", data={"api_key": key, "next": "/dashboard/alerts"})
    assert resp.status_code == 303, resp.text


def _alert(alert_id: uuid.UUID) -> Alert:
    with transaction() as s:
        alert = s.get(Alert, alert_id)
        assert alert is not None
        s.expunge(alert)
        return alert


def test_root_favicon_and_offline_docs(client: TestClient) -> None:
    root = client.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/dashboard"
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    docs = client.get("/docs")
    assert docs.status_code == 200
    # Every script, stylesheet and icon the page names is served by us, and is really there.
    urls = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', docs.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    for url in urls:
        assert client.get(url).status_code == 200, url
    assert "/openapi.json" in docs.text
    assert client.get("/redoc").status_code == 404  # ReDoc would load its script from a CDN


def test_acknowledge_then_resolve_with_notes_from_the_feed(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {"agent": "a-1"}, [("customer", "angry", 3.0, -0.6)])
    alert_id = store_alert(tenant_id, rec_id)
    _login(client, key)
    page = client.get("/dashboard/alerts")
    assert page.status_code == 200 and f'id="alert-{alert_id}"' in page.text
    assert f'action="/dashboard/alerts/{alert_id}/resolve"' in page.text and "Acknowledge" in page.text

    ack = client.post(f"/dashboard/alerts/{alert_id}/acknowledge",
                      data={"note": "calling them back", "next": "/dashboard/alerts?state=open"})
    assert ack.status_code == 303
    assert ack.headers["location"] == f"/dashboard/alerts?state=open#alert-{alert_id}"
    stored = _alert(alert_id)
    assert stored.state == "acknowledged" and stored.note == "calling them back" and stored.acknowledged_at

    # The script's request: the re-rendered item, not a redirect.
    done = client.post(f"/dashboard/alerts/{alert_id}/resolve", data={"note": "refund issued"},
                       headers={"X-Dashboard-Fragment": "feed"})
    assert done.status_code == 200 and done.text.lstrip().startswith("<li")
    assert "resolved" in done.text and "refund issued" in done.text and "Resolve</button>" not in done.text
    assert _alert(alert_id).state == "resolved"
    # Resolving again changes nothing; acknowledging a resolved alert is refused with the reason.
    again = client.post(f"/dashboard/alerts/{alert_id}/acknowledge", data={})
    assert again.status_code == 409 and "already resolved" in again.text


def test_feed_filters(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    now = datetime.now(UTC)
    angry, sad = [("customer", "angry", 3.0, -0.6)], [("customer", "sad", 3.0, -0.4)]
    billing = store_call(tenant_id, now, {"agent": "ann", "queue": "billing"}, angry)
    sales = store_call(tenant_id, now, {"agent": "bob", "queue": "sales"}, sad)
    high = store_alert(tenant_id, billing, "Angry", "high")
    low = store_alert(tenant_id, sales, "Sad", "low")
    _login(client, key)
    client.post(f"/dashboard/alerts/{low}/resolve", data={})

    def shown(query: str) -> set[uuid.UUID]:
        page = client.get(f"/dashboard/alerts?{query}")
        assert page.status_code == 200, page.text
        return {uuid.UUID(m) for m in re.findall(r'data-alert-id="([0-9a-f-]{36})"', page.text)}

    assert shown("") == {high, low}
    assert shown("state=open") == {high}
    assert shown("state=resolved") == {low}
    assert shown("severity=low") == {low}
    assert shown("agent=ann") == {high}
    assert shown("queue=sales") == {low}
    assert shown(f"rule={_alert(high).rule_id}") == {high}
    # The live stream carries the same filters.
    stream_url = client.get("/dashboard/alerts?queue=sales").text.split('data-stream-url="')[1].split('"')[0]
    assert stream_url.startswith("/dashboard/live/alerts?since=") and "queue=sales" in stream_url
    bad = client.get("/dashboard/alerts?severity=apocalyptic")
    assert bad.status_code == 422 and "severity" in bad.text
    assert client.get("/dashboard/alerts?rule=not-a-uuid").status_code == 422


def test_another_tenants_alert_cannot_be_touched(client: TestClient, make_tenant) -> None:
    owner, _ = make_tenant()
    rec_id = store_call(owner, datetime.now(UTC), {}, [("customer", "angry", 3.0, -0.6)])
    alert_id = store_alert(owner, rec_id)
    _, intruder = make_tenant()
    _login(client, intruder)
    for action in ("acknowledge", "resolve"):
        resp = client.post(f"/dashboard/alerts/{alert_id}/{action}", data={"note": "mine now"})
        assert resp.status_code == 404 and "alert not found" in resp.text
    assert _alert(alert_id).state == "open" and _alert(alert_id).note == ""
    assert f"alert-{alert_id}" not in client.get("/dashboard/alerts").text
    client.cookies.clear()
    anonymous = client.post(f"/dashboard/alerts/{alert_id}/resolve", data={})
    assert anonymous.status_code == 303 and "/dashboard/login" in anonymous.headers["location"]
    assert _alert(alert_id).state == "open"


def test_call_page_offers_the_alert_actions(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("customer", "angry", 3.0, -0.6)])
    alert_id = store_alert(tenant_id, rec_id, start_s=1.5)
    _login(client, key)
    page = client.get(f"/dashboard/recordings/{rec_id}")
    assert page.status_code == 200
    assert f'action="/dashboard/alerts/{alert_id}/resolve"' in page.text
    assert f'value="/dashboard/recordings/{rec_id}"' in page.text  # the form comes back to the call
    resp = client.post(f"/dashboard/alerts/{alert_id}/resolve",
                       data={"note": "ok", "next": f"/dashboard/recordings/{rec_id}"})
    assert resp.headers["location"] == f"/dashboard/recordings/{rec_id}#alert-{alert_id}"
    # An off-site "next" is never followed.
    other = store_alert(tenant_id, rec_id, "Other")
    evil = client.post(f"/dashboard/alerts/{other}/acknowledge", data={"next": "https://evil.example/"})
    assert evil.headers["location"] == f"/dashboard#alert-{other}"


def test_read_only_key_sees_no_write_actions_and_cannot_post(client: TestClient, make_tenant) -> None:
    from db.queries.tenants import create_api_key

    tenant_id, write_key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("customer", "angry", 3.0, -0.6)])
    alert_id = store_alert(tenant_id, rec_id)
    with transaction() as s:
        _, read_key = create_api_key(s, tenant_id, "wallboard", scope="read")
    _login(client, write_key)
    assert "Resolve</button>" in client.get("/dashboard/alerts").text
    assert 'action="/dashboard/upload"' in client.get("/dashboard/recordings").text

    client.cookies.clear()
    _login(client, read_key)
    feed, call = client.get("/dashboard/alerts"), client.get(f"/dashboard/recordings/{rec_id}")
    assert feed.status_code == 200 and f"alert-{alert_id}" in feed.text
    for page in (feed, call, client.get("/dashboard/recordings")):
        assert page.status_code == 200
        # The only form that posts is the logout button.
        assert page.text.count('method="post"') == 1 and 'action="/dashboard/logout"' in page.text
        assert "Resolve</button>" not in page.text and "Acknowledge</button>" not in page.text
        assert 'action="/dashboard/upload"' not in page.text
    refused = client.post(f"/dashboard/alerts/{alert_id}/resolve", data={"note": "x"})
    assert refused.status_code == 403 and "read-only" in refused.text
    assert _alert(alert_id).state == "open"
