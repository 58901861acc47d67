"""/v1/analytics over rows stored directly: emotion distribution and alert share per day, agent and
queue; only finished calls of the caller's tenant in the range; newest prediction per segment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from db.models import Alert
from db.session import transaction
from tests.dashboard_fixtures import rescore_last_customer_segment, store_call

D1, D2 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC), datetime(2026, 3, 3, 23, 30, tzinfo=UTC)
RANGE = "from=2026-03-01T00:00:00Z&to=2026-03-05T00:00:00Z"


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app()) as c:
        yield c


def add_alert(client: TestClient, key: str, tenant_id: uuid.UUID, rec_id: uuid.UUID, severity: str) -> None:
    resp = client.post("/v1/rules", headers={"X-API-Key": key},
                       json={"name": f"r-{severity}-{uuid.uuid4().hex[:4]}",
                             "definition": {"severity": severity, "when": {"label": "angry"}}})
    assert resp.status_code == 201, resp.text
    rule = resp.json()
    with transaction() as s:
        from db.models import RuleVersion

        version = s.query(RuleVersion).filter_by(rule_id=uuid.UUID(rule["id"])).one()
        s.add(Alert(tenant_id=tenant_id, rule_id=version.rule_id, rule_version_id=version.id, rule_version=1,
                    recording_id=rec_id, window_key="seg-0", severity=severity, first_segment_index=0,
                    last_segment_index=0, start_s=0.0, end_s=4.0, fired_at_s=4.0, evidence=[]))


@pytest.fixture
def calls(make_tenant) -> dict:
    tenant_id, key = make_tenant()
    r1 = store_call(tenant_id, D1, {"agent": "ann", "queue": "billing"},
                    [("agent", None, 3.0, None), ("customer", "angry", 4.0, -0.8),
                     ("customer", "neutral", 2.0, 0.0)])
    r2 = store_call(tenant_id, D1, {"agent": "bob", "queue": "billing"}, [("customer", "happy", 3.0, 0.6)])
    r3 = store_call(tenant_id, D2, {"agent": "ann"}, [("customer", "angry", 2.0, -0.5)])
    rescore_last_customer_segment(r3, "sad", -0.4)
    # Not counted: still being analyzed, outside the range, another tenant's.
    store_call(tenant_id, D2, {"agent": "ann"}, [("customer", "angry", 5.0, -0.9)], status="analyzing")
    store_call(tenant_id, datetime(2026, 2, 1, tzinfo=UTC), {"agent": "ann"},
               [("customer", "fear", 5.0, -0.9)])
    other_id, _ = make_tenant()
    store_call(other_id, D1, {"agent": "ann", "queue": "billing"}, [("customer", "disgust", 9.0, -0.9)])
    return {"tenant_id": tenant_id, "key": key, "r1": r1, "r2": r2, "r3": r3}


def _get(client: TestClient, key: str, path: str) -> dict:
    resp = client.get(path, headers={"X-API-Key": key})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _groups(client: TestClient, key: str, path: str) -> dict[str, dict]:
    return {g["key"]: g for g in _get(client, key, path)["groups"]}


def test_emotions_per_day_counts_finished_calls_and_newest_predictions(client: TestClient,
                                                                       calls: dict) -> None:
    body = _get(client, calls["key"], f"/v1/analytics/emotions?group_by=day&{RANGE}")
    assert body["group_by"] == "day" and body["roles"] == ["customer", "unknown"]
    assert body["from"].startswith("2026-03-01") and body["to"].startswith("2026-03-05")
    day1, day2 = body["groups"]
    assert (day1["key"], day1["calls"], day1["segments"], day1["seconds"]) == ("2026-03-02", 2, 3, 9.0)
    seconds = {k: v["seconds"] for k, v in day1["labels"].items()}
    assert seconds == {"angry": 4.0, "happy": 3.0, "neutral": 2.0}
    assert day1["labels"]["angry"]["share"] == pytest.approx(4 / 9)
    assert day1["mean_valence"] == pytest.approx((-0.8 + 0.0 + 0.6) / 3)
    # 23:30 UTC is still the 3rd (UTC days); the rescored segment counts once, with its newest label.
    assert day2["key"] == "2026-03-03" and day2["calls"] == 1
    assert {k: v["segments"] for k, v in day2["labels"].items()} == {"sad": 1}
    assert day2["mean_valence"] == pytest.approx(-0.4)


def test_emotions_per_agent_and_queue(client: TestClient, calls: dict) -> None:
    agents = _groups(client, calls["key"], f"/v1/analytics/emotions?group_by=agent&{RANGE}")
    assert {k: g["calls"] for k, g in agents.items()} == {"ann": 2, "bob": 1}
    assert set(agents["ann"]["labels"]) == {"angry", "neutral", "sad"}
    queues = _groups(client, calls["key"], f"/v1/analytics/emotions?group_by=queue&{RANGE}")
    assert {k: g["calls"] for k, g in queues.items()} == {"(none)": 1, "billing": 2}
    # Agents' own emotions are not inferred (policy): asking for that role finds calls but no segments.
    by_role = _get(client, calls["key"], f"/v1/analytics/emotions?group_by=day&roles=agent&{RANGE}")
    assert by_role["roles"] == ["agent"] and all(g["segments"] == 0 for g in by_role["groups"])


def test_alert_share_per_day_and_agent(client: TestClient, calls: dict) -> None:
    key, tenant_id = calls["key"], calls["tenant_id"]
    add_alert(client, key, tenant_id, calls["r1"], "high")
    add_alert(client, key, tenant_id, calls["r1"], "medium")
    add_alert(client, key, tenant_id, calls["r3"], "low")
    day1, day2 = _get(client, key, f"/v1/analytics/alerts?group_by=day&{RANGE}")["groups"]
    assert (day1["calls"], day1["calls_with_alerts"], day1["alert_share"], day1["alerts"]) == (2, 1, 0.5, 2)
    assert day1["by_severity"] == {"high": 1, "medium": 1}
    assert (day2["calls"], day2["calls_with_alerts"], day2["alert_share"]) == (1, 1, 1.0)
    agents = _groups(client, key, f"/v1/analytics/alerts?group_by=agent&{RANGE}")
    assert (agents["ann"]["calls_with_alerts"], agents["ann"]["alerts"]) == (2, 3)
    assert (agents["bob"]["calls_with_alerts"], agents["bob"]["alert_share"]) == (0, 0.0)


@pytest.mark.parametrize("query", [
    "group_by=week",
    "from=2026-03-05T00:00:00Z&to=2026-03-01T00:00:00Z",
    "from=2024-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
    "roles=Not%20A%20Role",
    "from=yesterday",
])
def test_bad_parameters_get_422(client: TestClient, make_tenant, query: str) -> None:
    _, key = make_tenant()
    resp = client.get(f"/v1/analytics/emotions?{query}", headers={"X-API-Key": key})
    assert resp.status_code == 422, resp.text


def test_analytics_need_an_api_key(client: TestClient) -> None:
    assert client.get("/v1/analytics/emotions").status_code == 401
    assert client.get("/v1/analytics/alerts", headers={"X-API-Key": "cpk_nope"}).status_code == 401


def test_default_range_is_the_last_30_days(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    store_call(tenant_id, datetime.now(UTC), {}, [("customer", "happy", 2.0, 0.5)])
    groups = _get(client, key, "/v1/analytics/emotions?group_by=queue")["groups"]
    assert [(g["key"], g["calls"]) for g in groups] == [("(none)", 1)]


def test_overview_and_api_share_one_default_period(client: TestClient, make_tenant) -> None:
    """A call 20 days old is in both defaults, one 40 days old in neither; the page names the same
    first and last day as the API's default range."""
    from datetime import timedelta

    tenant_id, key = make_tenant()
    now = datetime.now(UTC)
    store_call(tenant_id, now - timedelta(days=20), {}, [("customer", "happy", 2.0, 0.5)])
    store_call(tenant_id, now - timedelta(days=40), {}, [("customer", "sad", 2.0, -0.5)])
    api = _get(client, key, "/v1/analytics/emotions?group_by=queue")
    assert [g["calls"] for g in api["groups"]] == [1]
    first_day = (now - timedelta(days=29)).date().isoformat()
    tomorrow = (now + timedelta(days=1)).date().isoformat()
    assert api["from"].startswith(first_day) and api["to"].startswith(tomorrow)

    from tests.dashboard_fixtures import login_form_token

    login = client.post("/dashboard/login", data={"api_key": key, "csrf_token": login_form_token(client)},
                        follow_redirects=False)
    assert login.status_code == 303, login.text
    page = client.get("/dashboard").text
    assert f"Finished calls created {first_day} to {now.date().isoformat()} (UTC): 1." in page
