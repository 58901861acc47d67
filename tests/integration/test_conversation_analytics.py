"""GET /v1/analytics/conversation: the stored conversation measures of finished calls, averaged
per agent (or day, or queue), tenant-scoped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from db.models import Recording
from db.session import transaction


def _measures(agent_share: float, customer_share: float, cuts: int, sentiment: float | None,
              trend: float | None) -> dict:
    talk = {"agent": {"seconds": agent_share * 100, "share": agent_share},
            "customer": {"seconds": customer_share * 100, "share": customer_share}}
    return {"duration_s": 100.0, "talk": talk,
            "non_talk": {"total_s": 10.0, "share": 0.1, "silences": []},
            "interruptions": {"count": cuts, "total_s": 1.0, "by_role": {}, "items": []},
            "talk_speed": {}, "loudness": [],
            "sentiment": {"role": "customer", "overall": sentiment, "by_quarter": [None] * 4, "trend": trend}}


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app()) as c:
        yield c


def test_averages_per_agent_and_tenant_scope(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    _, other_key = make_tenant()
    now = datetime.now(UTC)
    with transaction() as s:
        for agent, measures, status in [
            ("ann", _measures(0.6, 0.3, 2, -1.0, 2.0), "done"),
            ("ann", _measures(0.4, 0.5, 0, 3.0, None), "done"),
            ("bob", _measures(0.5, 0.4, 5, None, None), "done"),
            ("bob", _measures(0.9, 0.0, 9, 4.0, 4.0), "analyzing"),  # not finished: not counted
        ]:
            s.add(Recording(tenant_id=tenant_id, media_uri="/x.wav", meta={"agent": agent}, status=status,
                            conversation=measures, created_at=now, completed_at=now))
        s.add(Recording(tenant_id=tenant_id, media_uri="/y.wav", meta={"agent": "cid"}, status="done",
                        created_at=now))  # finished before measures existed: not counted either
    body = client.get("/v1/analytics/conversation", params={"group_by": "agent"},
                      headers={"X-API-Key": key}).json()
    groups = {g["key"]: g for g in body["groups"]}
    assert set(groups) == {"ann", "bob"}
    ann = groups["ann"]
    assert ann["calls"] == 2 and ann["talk_share"] == {"agent": 0.5, "customer": 0.4}
    assert ann["interruptions"] == 1.0 and ann["non_talk_share"] == 0.1 and ann["duration_s"] == 100.0
    assert ann["sentiment"] == 1.0 and ann["sentiment_trend"] == 2.0  # nulls are left out of averages
    assert groups["bob"]["calls"] == 1 and groups["bob"]["sentiment"] is None

    day = client.get("/v1/analytics/conversation", headers={"X-API-Key": key}).json()["groups"]
    assert [g["calls"] for g in day] == [3]
    other = client.get("/v1/analytics/conversation", headers={"X-API-Key": other_key}).json()
    assert other["groups"] == []
    assert client.get("/v1/analytics/conversation", params={"group_by": "week"},
                      headers={"X-API-Key": key}).status_code == 422
