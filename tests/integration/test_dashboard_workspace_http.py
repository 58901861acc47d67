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
from tests.dashboard_fixtures import csrf_token, login_form_token, store_alert, store_call, store_conversation


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(), follow_redirects=False) as c:
        yield c


def _login(client: TestClient, key: str) -> None:
    resp = client.post("/dashboard/login", data={"api_key": key, "next": "/dashboard/alerts",
                                                 "csrf_token": login_form_token(client)})
    assert resp.status_code == 303, resp.text
    # Every later form carries the session's token, as the pages' forms and script do.
    client.headers["X-CSRF-Token"] = csrf_token(client.get("/dashboard/alerts").text)


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


def _segment_ids(rec_id: uuid.UUID) -> dict[str, uuid.UUID]:
    from sqlalchemy import select

    from db.models import Segment

    with transaction() as s:
        return {role: sid for role, sid in s.execute(
            select(Segment.role, Segment.id).where(Segment.recording_id == rec_id))}


def test_call_page_summary_first_and_internals_folded(client: TestClient, make_tenant) -> None:
    from sqlalchemy import update

    from db.models import Prediction

    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {"agent": "ann"},
                        [("agent", None, 2.0, None), ("customer", "neutral", 4.0, 0.1),
                         ("agent", None, 2.0, None), ("customer", "angry", 4.0, -0.7)])
    with transaction() as s:
        s.execute(update(Prediction).values(
            reasoning=[{"start_s": 3.0, "end_s": 7.0, "modality": "audio", "cue": "classifier",
                        "value": 0.621, "text": "Voice classifier: angry 0.62 (raw: frustration)"},
                       {"start_s": 4.0, "end_s": 4.5, "modality": "audio", "cue": "pitch", "value": 35.0,
                        "text": "Pitch 35% above this speaker's call baseline"}],
            reasoning_text="Customer, 0:03.0–0:07.0: voice 35% higher at 0:04.0 than their own baseline; "
                           "→ angry 0.90, uncertain: no"))
    _login(client, key)
    text = client.get(f"/dashboard/recordings/{rec_id}").text
    # The summary comes before the player and the timeline.
    assert text.index('id="summary-h"') < text.index('id="player"') < text.index('id="timeline-h"')
    sentiment = text.split('data-cell="sentiment">')[1].split("</dd>")[0]
    assert "neutral +0.10" in sentiment and "angry −0.70" in sentiment and "worsened" in sentiment
    assert "Talk:" in text and "customer 67%" in text and "2 turns" in text
    # Only the customer has a chart; the agent's policy is said once instead.
    assert text.count('class="timeline-svg"') == 1 and 'aria-label="customer emotion over time"' in text
    assert text.count('data-role="agent"') == 1 and "Agent</strong>: no emotion chart. policy" in text
    # The legend sits beside the chart, inside the same block.
    legend = text.index('class="legend side"')
    assert text.index('class="timeline-wrap"') < legend < text.index('id="segments-h"')
    # One readable reason per segment; the classifier's internals only inside "Model details".
    assert "Voice 35% higher at 0:04.0 than their own baseline" in text
    before_details = text.split('<details class="internals">')[0]
    assert "classifier" not in before_details and "raw: frustration" not in before_details
    assert "0.621" not in before_details
    details = text.split('<details class="internals">')[1].split("</details>")[0]
    assert "classifier: 0.621" in details and "raw: frustration" in details
    assert '<details class="evidence-details">' in text  # closed until opened


def test_correct_a_label_from_the_call_page(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("agent", None, 2.0, None),
                                                           ("customer", "neutral", 4.0, 0.1)])
    seg = _segment_ids(rec_id)
    _login(client, key)
    page = client.get(f"/dashboard/recordings/{rec_id}").text
    assert f'action="/dashboard/segments/{seg["customer"]}/label"' in page
    assert f'action="/dashboard/segments/{seg["agent"]}/label"' not in page  # policy: no emotion data

    saved = client.post(f"/dashboard/segments/{seg['customer']}/label",
                        data={"label": "angry", "note": "shouting at 0:05",
                              "next": f"/dashboard/recordings/{rec_id}"})
    assert saved.status_code == 303 and saved.headers["location"] == f"/dashboard/recordings/{rec_id}#seg-1"
    # The API sees the very same correction, with who set it.
    api = client.get(f"/v1/segments/{seg['customer']}", headers={"X-API-Key": key}).json()
    assert api["correction"]["label"] == "angry" and api["correction"]["note"] == "shouting at 0:05"
    assert api["correction"]["labeled_by"].startswith("test (")

    item = client.post(f"/dashboard/segments/{seg['customer']}/label", data={"label": "sad"},
                       headers={"X-Dashboard-Fragment": "segment"})
    assert item.status_code == 200 and item.text.lstrip().startswith("<li")
    assert "supervisor: sad" in item.text and 'data-cell="corrected-by">by test (' in item.text
    assert "Remove correction" in item.text

    bad = client.post(f"/dashboard/segments/{seg['customer']}/label", data={"label": "purple"})
    assert bad.status_code == 422 and "unknown label" in bad.text
    policy = client.post(f"/dashboard/segments/{seg['agent']}/label", data={"label": "angry"})
    assert policy.status_code == 409 and "policy" in policy.text

    removed = client.post(f"/dashboard/segments/{seg['customer']}/label/delete", data={},
                          headers={"X-Dashboard-Fragment": "segment"})
    assert removed.status_code == 200 and "supervisor:" not in removed.text
    after = client.get(f"/v1/segments/{seg['customer']}", headers={"X-API-Key": key}).json()
    assert after["correction"] is None


def test_another_tenants_segment_cannot_be_corrected(client: TestClient, make_tenant) -> None:
    owner, _ = make_tenant()
    rec_id = store_call(owner, datetime.now(UTC), {}, [("customer", "neutral", 4.0, 0.1)])
    seg = _segment_ids(rec_id)["customer"]
    _, intruder = make_tenant()
    _login(client, intruder)
    resp = client.post(f"/dashboard/segments/{seg}/label", data={"label": "angry"})
    assert resp.status_code == 404 and "segment not found" in resp.text
    assert client.post(f"/dashboard/segments/{seg}/label/delete", data={}).status_code == 404
    from db.models import SegmentLabel

    with transaction() as s:
        assert s.get(SegmentLabel, seg) is None


def test_calls_search_by_call_id_and_words(client: TestClient, make_tenant) -> None:
    import json

    from sqlalchemy import update

    from db.models import Recording
    from db.queries.corrections import put_transcript
    from worker.pipeline.text.transcript import parse_transcript, to_rows

    tenant_id, key = make_tenant()
    now = datetime.now(UTC)
    calls = {name: store_call(tenant_id, now, {}, [("customer", "neutral", 3.0, 0.0)])
             for name in ("CRM-4711", "crm-4712", "crm-5000", "100%_off")}
    with transaction() as s:
        for name, rec_id in calls.items():
            s.execute(update(Recording).where(Recording.id == rec_id).values(external_id=name))
        put_transcript(s, calls["crm-4712"], "json", to_rows(parse_transcript(json.dumps({"utterances": [
            {"start": 0.5, "end": 2.5, "text": "I want a Refund for this bill", "speaker": "customer",
             "channel": 1}]}).encode())))
    _login(client, key)

    def found(query: str) -> set[uuid.UUID]:
        page = client.get(f"/dashboard/recordings?{query}")
        assert page.status_code == 200, page.text
        return {uuid.UUID(m) for m in re.findall(r'<tr data-id="([0-9a-f-]{36})"', page.text)}

    assert found("call_id=crm-47") == {calls["CRM-4711"], calls["crm-4712"]}  # prefix, any case
    assert found("call_id=100%25_") == {calls["100%_off"]}  # % and _ are literal, not wildcards
    assert found("call_id=%25") == set()
    assert found("words=refund") == {calls["crm-4712"]}
    assert found("words=text") == set()  # the JSON keys of the transcript are not its words
    assert found("words=refund&call_id=crm-5") == set()
    assert 'value="refund"' in client.get("/dashboard/recordings?words=refund").text
    assert "No calls match this search" in client.get("/dashboard/recordings?words=zzz").text


def test_new_calls_endpoint_follows_the_search_and_the_tenant(client: TestClient, make_tenant) -> None:
    from datetime import timedelta

    tenant_id, key = make_tenant()
    other_tenant, _ = make_tenant()
    before = datetime.now(UTC) - timedelta(seconds=1)
    sad = [("customer", "sad", 3.0, -0.3)]
    old = store_call(tenant_id, before - timedelta(hours=1), {"agent": "ann"}, sad)
    new_ann = store_call(tenant_id, datetime.now(UTC), {"agent": "ann"}, sad)
    new_bob = store_call(tenant_id, datetime.now(UTC), {"agent": "bob"}, sad)
    store_call(other_tenant, datetime.now(UTC), {"agent": "ann"}, sad)
    _login(client, key)
    page = client.get("/dashboard/recordings?agent=ann").text
    new_url = page.split('data-new-url="')[1].split('"')[0].replace("&amp;", "&")
    assert new_url.startswith("/dashboard/live/recordings/new?since=") and "agent=ann" in new_url

    def ids(query: str) -> list[uuid.UUID]:
        resp = client.get(f"/dashboard/live/recordings/new?{query}")
        assert resp.status_code == 200, resp.text
        return [uuid.UUID(i["id"]) for i in resp.json()["items"]]

    since = before.isoformat().replace("+", "%2B")
    assert ids(f"since={since}&agent=ann") == [new_ann]
    assert set(ids(f"since={since}")) == {new_ann, new_bob} and old not in ids(f"since={since}")
    assert "<tr" in client.get(f"/dashboard/live/recordings/new?since={since}").json()["items"][0]["html"]
    client.cookies.clear()
    assert client.get(f"/dashboard/live/recordings/new?since={since}").status_code == 401


def test_call_summary_shows_stored_conversation_measures(client: TestClient, make_tenant) -> None:
    from sqlalchemy import update

    from db.models import Recording

    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("agent", None, 2.0, None),
                                                           ("customer", "angry", 4.0, -0.6)])
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == rec_id).values(conversation={
            "duration_s": 60.0,
            "talk": {"agent": {"seconds": 2.0, "share": 0.033}, "customer": {"seconds": 4.0, "share": 0.067}},
            "non_talk": {"total_s": 54.0, "share": 0.9,
                         "silences": [{"start_s": 7, "end_s": 60, "duration_s": 53}]},
            "interruptions": {"count": 2, "total_s": 1.4, "by_role": {"customer": 2}, "items": []},
            "talk_speed": {"customer": {"words_per_minute": 151.0, "source": "words"}},
            "loudness": [],
            "sentiment": {"role": "customer", "overall": -3.2, "by_quarter": [], "trend": -1.5},
        }))
    _login(client, key)
    text = client.get(f"/dashboard/recordings/{rec_id}").text
    measures = text.split('aria-label="Conversation measures"')[1].split("</dl>")[0]
    assert "customer 7% (151 words/min)" in measures and "agent 3%" in measures
    assert "90% (1 gap over 2 s)" in measures and "2 (1.4 s overtalk)" in measures
    assert "−3.2, trend −1.5" in measures



def test_overview_shows_conversation_measures_per_agent(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    now = datetime.now(UTC)
    calls = [("ann", 0.5, 1, -2.0, 1.0), ("ann", 0.3, 3, 1.0, 2.0), ("bob", 0.4, 2, 3.0, -1.0)]
    for agent, share, interruptions, sentiment, trend in calls:
        rec_id = store_call(tenant_id, now, {"agent": agent}, [("customer", "neutral", 4.0, 0.0)])
        store_conversation(rec_id, share, interruptions, sentiment, trend)
    _login(client, key)
    page = client.get("/dashboard").text
    table = page.split('id="conversation"')[1].split("</table>")[0]
    rows = re.findall(r'<tr data-key="([^"]*)">(.*?)</tr>', table, re.S)
    assert [k for k, _ in rows] == ["all", "ann", "bob"]
    cells = {k: re.findall(r'<td class="num"[^>]*>([^<]*)</td>', row) for k, row in rows}
    # calls, agent talk, customer talk, silence, interruptions per call, sentiment, trend
    assert cells["all"] == ["3", "20%", "40%", "10%", "2.0", "+0.7", "+0.7"]
    assert cells["ann"] == ["2", "20%", "40%", "10%", "2.0", "−0.5", "+1.5"]
    assert cells["bob"] == ["1", "20%", "40%", "10%", "2.0", "+3.0", "−1.0"]
    assert "All calls" in rows[0][1] and 'href="/dashboard/recordings?agent=ann"' in rows[1][1]
    assert 'id="live-now"' not in page
    # Calls streaming in now are pointed at from the top of the overview.
    for _ in range(2):
        store_call(tenant_id, now, {}, [("customer", "neutral", 2.0, 0.0)], status="live")
    live = client.get("/dashboard").text.split('id="live-now"')[1].split("</p>")[0]
    assert 'href="/dashboard/recordings?status=live">2 calls live now</a>' in live

    # Another tenant's overview has none of these calls.
    _, other = make_tenant()
    client.cookies.clear()
    _login(client, other)
    assert "No finished calls with conversation measures in this range." in client.get("/dashboard").text
