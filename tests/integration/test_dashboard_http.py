"""The dashboard at the HTTP level (no browser): the cookie session, tenant scoping, the media
endpoint's Range support, filters and the live endpoints."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.dashboard_auth import COOKIE_NAME
from api.signing import session_secret, sign_token, unsign_token
from callpulse.settings import get_settings
from db.models import ApiKey, Prediction, Recording, Segment
from db.queries.corrections import put_transcript, set_label
from db.session import transaction
from tests.dashboard_fixtures import csrf_token, login_form_token, store_call
from worker.pipeline.text.transcript import parse_transcript, to_rows


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(), follow_redirects=False) as c:
        yield c


def _login(client: TestClient, key: str) -> None:
    token = login_form_token(client)
    resp = client.post("/dashboard/login", data={"api_key": key, "next": "/dashboard/recordings",
                                                 "csrf_token": token})
    assert resp.status_code == 303 and resp.headers["location"] == "/dashboard/recordings", resp.text


def test_login_sets_an_httponly_session_cookie_without_the_key(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    assert client.get("/dashboard/recordings").status_code == 303  # not logged in: to the login form
    assert client.get("/dashboard/recordings").headers["location"].startswith("/dashboard/login?next=")
    token = login_form_token(client)
    bad = client.post("/dashboard/login", data={"api_key": "cpk_wrong", "csrf_token": token})
    assert bad.status_code == 401 and "not valid" in bad.text

    resp = client.post("/dashboard/login", data={"api_key": key, "next": "https://evil.example/",
                                                 "csrf_token": token})
    assert resp.status_code == 303 and resp.headers["location"] == "/dashboard"  # no open redirect
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/dashboard" in cookie
    value = client.cookies[COOKIE_NAME]
    assert key not in value and key.removeprefix("cpk_") not in value
    page = client.get("/dashboard/recordings")
    assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert client.get("/dashboard").status_code == 200
    assert client.get("/dashboard/alerts").status_code == 200

    out = client.post("/dashboard/logout", data={"csrf_token": csrf_token(page.text)})
    assert out.status_code == 303 and COOKIE_NAME in out.headers["set-cookie"]
    assert client.get("/dashboard/recordings").status_code == 303


def test_forged_and_revoked_sessions_are_refused(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    _login(client, key)
    valid = client.cookies[COOKIE_NAME]
    token, _, signature = valid.rpartition(".")
    forged = sign_token(token, b"guessed secret")
    unknown = sign_token("a" * 43, session_secret(get_settings()))  # signed by us, but no such session
    for value in (forged, f"{token}.{signature[:-2]}xx", "garbage", unknown):
        client.cookies.set(COOKIE_NAME, value, path="/dashboard")
        assert client.get("/dashboard/recordings").status_code == 303
        assert client.get("/dashboard/live/recordings", params={"ids": str(uuid.uuid4())}).status_code == 401
    assert unsign_token(valid, b"x") is None

    client.cookies.set(COOKIE_NAME, valid, path="/dashboard")
    assert client.get("/dashboard/recordings").status_code == 200
    with transaction() as s:
        s.execute(update(ApiKey).where(ApiKey.tenant_id == tenant_id).values(revoked_at=datetime.now(UTC)))
    assert client.get("/dashboard/recordings").status_code == 303  # revoking the key ends the session


def test_other_tenants_call_is_not_found(client: TestClient, make_tenant, tmp_path: Path) -> None:
    owner_id, _ = make_tenant()
    rec_id = store_call(owner_id, datetime.now(UTC), {}, [("customer", "angry", 3.0, -0.6)])
    _, intruder_key = make_tenant()
    _login(client, intruder_key)
    for path in ("", "/media", "/status"):
        assert client.get(f"/dashboard/recordings/{rec_id}{path}").status_code == 404
    rows = client.get("/dashboard/live/recordings", params={"ids": str(rec_id)}).json()
    assert rows["items"] == []
    assert str(rec_id) not in client.get("/dashboard/recordings").text


def test_media_answers_range_requests(client: TestClient, make_tenant, tmp_path: Path) -> None:
    tenant_id, key = make_tenant()
    media = tmp_path / "call.ogg"
    media.write_bytes(bytes(range(256)) * 4)
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("customer", "happy", 2.0, 0.5)])
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == rec_id).values(media_uri=str(media)))
    assert client.get(f"/dashboard/recordings/{rec_id}/media").status_code == 401
    _login(client, key)
    full = client.get(f"/dashboard/recordings/{rec_id}/media")
    assert full.status_code == 200 and full.headers["content-type"] == "audio/ogg"
    assert full.headers["accept-ranges"] == "bytes" and len(full.content) == 1024
    part = client.get(f"/dashboard/recordings/{rec_id}/media", headers={"Range": "bytes=300-309"})
    assert part.status_code == 206 and part.headers["content-range"] == "bytes 300-309/1024"
    assert part.content == bytes(range(44, 54))


def test_calls_list_shows_summary_and_filters(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    now = datetime.now(UTC)
    angry = store_call(tenant_id, now, {"agent": "ann", "queue": "billing"},
                       [("agent", None, 2.0, None), ("customer", "neutral", 2.0, 0.1),
                        ("customer", "angry", 5.0, -0.7)])
    calm = store_call(tenant_id, now, {"agent": "bob"}, [("customer", "happy", 3.0, 0.6)])
    _login(client, key)
    page = client.get("/dashboard/recordings").text
    assert str(angry) in page and str(calm) in page
    # The customer's dominant emotion (by speech time) and the worst moment with its time link.
    assert f'/dashboard/recordings/{angry}#t=6.00' in page and "angry" in page
    for query, shown, hidden in (("agent=ann", angry, calm), ("queue=billing", angry, calm),
                                 ("label=happy", calm, angry), ("status=done", angry, None)):
        text = client.get(f"/dashboard/recordings?{query}").text
        assert str(shown) in text, query
        assert hidden is None or str(hidden) not in text, query
    assert client.get("/dashboard/recordings?status=nope").status_code == 422
    live = client.get("/dashboard/live/recordings", params=[("ids", str(angry)), ("ids", str(calm))]).json()
    assert {item["id"] for item in live["items"]} == {str(angry), str(calm)}
    assert all(item["final"] and item["html"].startswith("<tr") for item in live["items"])
    status = client.get(f"/dashboard/recordings/{angry}/status").json()
    assert status["final"] and status["segments_done"] == status["segments_total"] == 2


def test_call_page_renders_timeline_and_empty_transcript(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {"agent": "ann"},
                        [("agent", None, 2.0, None), ("customer", "angry", 4.0, -0.7)])
    _login(client, key)
    page = client.get(f"/dashboard/recordings/{rec_id}")
    assert page.status_code == 200
    text = page.text
    assert f'src="/dashboard/recordings/{rec_id}/media"' in text
    assert 'class="timeline-svg"' in text and 'role="button"' in text and 'data-seek="3.000"' in text
    assert "No transcript for this call" in text
    assert client.get(f"/dashboard/recordings/{uuid.uuid4()}").status_code == 404


def test_call_page_shows_words_corrections_and_doubt(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    # agent 0–2 s on channel 0; customer 3–7 s on channel 1.
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("agent", None, 2.0, None),
                                                           ("customer", "angry", 4.0, -0.7)])
    with transaction() as s:
        put_transcript(s, rec_id, "json", to_rows(parse_transcript(json.dumps({"utterances": [
            {"start": 3.2, "end": 6.5, "text": "third time I call about this bill", "speaker": "customer",
             "channel": 1}]}).encode())))
        customer = s.scalars(select(Segment).where(Segment.recording_id == rec_id,
                                                   Segment.role == "customer")).one()
        s.execute(update(Prediction).where(Prediction.segment_id == customer.id).values(
            uncertain=True, modalities={
                "audio": {"label": "neutral", "confidence": 0.41, "weight": 0.55},
                "text": {"label": "angry", "confidence": 0.52, "weight": 0.45}}))
        key_row = s.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id)).one()
        set_label(s, customer, tenant_id, "sad", None, key_row)
    _login(client, key)
    text = client.get(f"/dashboard/recordings/{rec_id}").text
    # Words beside the segment (each a seek button), the transcript panel, the correction, the doubt.
    assert 'class="link-button word" data-seek="' in text and ">third</button>" in text
    assert "third time I call about this bill" in text and "No transcript for this call" not in text
    assert "supervisor: sad" in text
    assert 'class="badge uncertain-badge">uncertain<' in text
    # Which modality said what, so a supervisor sees where the doubt comes from.
    assert "voice: neutral 0.41" in text and "words: angry 0.52" in text and "(weight 45%)" in text


def test_media_with_a_non_media_suffix_is_a_download_that_can_run_nothing(
    client: TestClient, make_tenant, tmp_path: Path
) -> None:
    """A valid WAV uploaded as x.html keeps that suffix on disk; it must not come back as HTML."""
    tenant_id, key = make_tenant()
    media = tmp_path / "x.html"
    media.write_bytes(b"RIFF....WAVE<script>alert(1)</script>")
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("customer", "happy", 2.0, 0.5)])
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == rec_id).values(media_uri=str(media)))
    _login(client, key)
    resp = client.get(f"/dashboard/recordings/{rec_id}/media")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-disposition"].startswith("attachment")
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in resp.headers["content-security-policy"]


def test_hostile_cookie_and_extreme_dates_are_not_server_errors(client: TestClient, make_tenant) -> None:
    # A sibling subdomain can plant any bytes; httpx only sends ASCII cookies itself, so raw header.
    resp = client.get("/dashboard/recordings", headers={"cookie": f"{COOKIE_NAME}=abc.\u00e9".encode()})
    assert resp.status_code in (303, 401)
    _, key = make_tenant()
    _login(client, key)
    for path in ("/dashboard?to=9999-12-31", "/dashboard/recordings?to=9999-12-31"):
        assert client.get(path).status_code == 422, path
    api = client.get("/v1/analytics/emotions", params={"to": "0001-01-02T00:00:00"},
                     headers={"X-API-Key": key})
    assert api.status_code == 422 and "out of range" in api.json()["detail"]
