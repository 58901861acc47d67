"""GET /v1/review-queue against the real Postgres: what it picks first (unsure, modalities
disagreeing, labels the tenant rarely corrected, spread over calls and speakers), what it never
shows (corrected, unanalyzed, unpredicted, deleted calls, media removed by retention, live
calls still streaming, another tenant's segments), its limit's bounds, and that a correction made
through the API leaves it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from db.models import Prediction, Recording, Segment, SegmentLabel
from db.queries.tenants import create_api_key
from db.session import transaction
from tests.rules_fixtures import allow_loopback_targets, auth, client  # noqa: F401


@dataclass
class Spec:
    """One segment: its newest prediction (None: not predicted) and how it was stored."""

    label: str | None
    confidence: float = 0.9
    speaker: str = "customer"
    modalities: dict[str, Any] = field(default_factory=dict)
    analyzed: bool = True
    older: tuple[str, float] | None = None  # an older model version's (label, confidence)


def store(tenant_id: uuid.UUID, specs: list[Spec], media_deleted: bool = False,
          age_s: float = 0.0, status: str = "done") -> tuple[uuid.UUID, list[uuid.UUID]]:
    created = datetime.now(UTC) - timedelta(seconds=age_s)
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename="call.wav", media_uri="/nonexistent/call.wav",
                        status=status, external_id=f"rq-{uuid.uuid4().hex[:8]}", duration_s=5.0 * len(specs),
                        created_at=created, media_deleted_at=created if media_deleted else None)
        s.add(rec)
        s.flush()
        ids = []
        for i, spec in enumerate(specs):
            seg = Segment(recording_id=rec.id, index=i, channel=0, speaker=spec.speaker, role="customer",
                          start_s=5.0 * i, end_s=5.0 * i + 4.0, analyzed=spec.analyzed,
                          skip_reason=None if spec.analyzed else "policy")
            s.add(seg)
            s.flush()
            ids.append(seg.id)
            versions = ([("0", *spec.older, created - timedelta(hours=1))] if spec.older else [])
            if spec.label is not None:
                versions.append(("1", spec.label, spec.confidence, created))
            for version, label, confidence, at in versions:
                s.add(Prediction(segment_id=seg.id, model_name="test", model_version=version, label=label,
                                 raw_label=label, scores={label: confidence}, confidence=confidence,
                                 modalities=spec.modalities if version == "1" else {}, reasoning=[],
                                 reasoning_text="", created_at=at))
        return rec.id, ids


def correct(tenant_id: uuid.UUID, segment_ids: list[uuid.UUID], label: str) -> None:
    with transaction() as s:
        for seg_id in segment_ids:
            s.add(SegmentLabel(segment_id=seg_id, tenant_id=tenant_id, label=label, labeled_by="test"))


def queue(client, key: str, limit: int = 100) -> list[dict[str, Any]]:
    resp = client.get(f"/v1/review-queue?limit={limit}", headers=auth(key))
    assert resp.status_code == 200, resp.text
    return list(resp.json()["items"])


def test_picks_unsure_disagreeing_and_rarely_corrected_first(client, make_tenant) -> None:
    tenant_id, key = make_tenant(["customer"])
    disagree = {"audio": {"label": "angry", "confidence": 0.8},
                "text": {"label": "neutral", "confidence": 0.7}}
    _, ids = store(tenant_id, [
        Spec("neutral", 0.95),                      # 0 sure, a label the tenant corrected often
        Spec("angry", 0.30),                        # 1 unsure
        Spec("angry", 0.80, modalities=disagree),   # 2 voice and words disagree
        Spec("sad", 0.95),                          # 3 as sure as 0, but a label never corrected
    ])
    # Ten corrections of "neutral" elsewhere make that label the best known one.
    _, done = store(tenant_id, [Spec("neutral", 0.9) for _ in range(10)], age_s=60)
    correct(tenant_id, done, "neutral")

    items = queue(client, key)
    order = [uuid.UUID(i["segment_id"]) for i in items]
    assert set(done).isdisjoint(order)  # corrections never come back
    by_id = {uuid.UUID(i["segment_id"]): i for i in items}
    assert order[0] == ids[1]
    assert order.index(ids[2]) < order.index(ids[3]) < order.index(ids[0])
    assert "unsure (confidence 0.30)" in by_id[ids[1]]["reasons"][0]
    assert any("voice said angry, words said neutral" in r for r in by_id[ids[2]]["reasons"])
    assert by_id[ids[2]]["modalities"] == {"audio": "angry", "text": "neutral"}
    assert any("no corrections of 'sad'" in r for r in by_id[ids[3]]["reasons"])
    assert by_id[ids[0]]["reasons"]  # always says why, even for the weakest pick
    first = by_id[ids[1]]
    assert first["call"]["external_id"].startswith("rq-") and first["label"] == "angry"
    assert (first["start_s"], first["end_s"]) == (5.0, 9.0)
    assert first["model"] == {"name": "test", "version": "1"}
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)


def test_picks_spread_over_calls_and_speakers(client, make_tenant) -> None:
    tenant_id, key = make_tenant(["customer"])
    _, long_call = store(tenant_id, [Spec("angry", 0.32) for _ in range(5)])
    _, other_call = store(tenant_id, [Spec("angry", 0.40)])
    _, two_people = store(tenant_id, [Spec("angry", 0.35, speaker="a"), Spec("angry", 0.36, speaker="a"),
                                      Spec("angry", 0.45, speaker="b")])
    order = [uuid.UUID(i["segment_id"]) for i in queue(client, key, limit=4)]
    # The best of each call first (a less unsure call is not starved by a long unsure one), and a
    # call's second speaker before its first speaker's second segment.
    assert len(set(order[:3]) & set(long_call)) == 1  # its five are equal: any one of them
    assert set(order[:3]) - set(long_call) == {other_call[0], two_people[0]}
    assert order[3] == two_people[2]


def test_exclusions_and_the_newest_prediction(client, make_tenant) -> None:
    tenant_id, key = make_tenant(["customer"])
    _, ids = store(tenant_id, [
        Spec("angry", 0.2),                         # 0 corrected below
        Spec(None, analyzed=False),                 # 1 not analyzed (policy)
        Spec(None),                                 # 2 analyzed, no prediction yet
        Spec("happy", 0.97, older=("fear", 0.1)),   # 3 the newest prediction counts, not the older
        Spec("sad", 0.5),                           # 4 the one plain pick
    ])
    _, retained = store(tenant_id, [Spec("angry", 0.1)], media_deleted=True)
    _, deleted = store(tenant_id, [Spec("angry", 0.1)])
    _, live = store(tenant_id, [Spec("angry", 0.1)], status="live")
    other_tenant, other_key = make_tenant(["customer"])
    _, foreign = store(other_tenant, [Spec("angry", 0.1)])

    resp = client.put(f"/v1/segments/{ids[0]}/label", headers=auth(key), json={"label": "angry"})
    assert resp.status_code == 200, resp.text
    deleted_call = _call_of(deleted[0])
    assert client.delete(f"/v1/recordings/{deleted_call}", headers=auth(key)).status_code == 204

    items = queue(client, key)
    shown = {uuid.UUID(i["segment_id"]): i for i in items}
    assert set(shown) == {ids[3], ids[4]}
    assert shown[ids[3]]["label"] == "happy" and shown[ids[3]]["confidence"] == 0.97
    assert not {retained[0], foreign[0], live[0]} & set(shown)
    # Another tenant's key sees its own queue only.
    assert [uuid.UUID(i["segment_id"]) for i in queue(client, other_key)] == [foreign[0]]

    # A correction through the API takes the pick out at once.
    resp = client.put(f"/v1/segments/{ids[4]}/label", headers=auth(key), json={"label": "sad"})
    assert resp.status_code == 200
    assert [uuid.UUID(i["segment_id"]) for i in queue(client, key)] == [ids[3]]


def _call_of(segment_id: uuid.UUID) -> uuid.UUID:
    with transaction() as s:
        seg = s.get(Segment, segment_id)
        assert seg is not None
        return seg.recording_id


def test_limit_bounds_scopes_and_auth(client, make_tenant) -> None:
    tenant_id, key = make_tenant(["customer"])
    store(tenant_id, [Spec("angry", 0.3 + 0.1 * i) for i in range(3)])
    with transaction() as s:
        read_key = create_api_key(s, tenant_id, "wallboard", scope="read")[1]
    assert len(queue(client, read_key, limit=2)) == 2  # read-scope keys may read it
    assert len(client.get("/v1/review-queue", headers=auth(key)).json()["items"]) == 3  # default limit
    for bad in ("0", "101", "-1", "x", "2.5"):
        resp = client.get(f"/v1/review-queue?limit={bad}", headers=auth(key))
        assert resp.status_code == 422 and "limit" in resp.text, (bad, resp.text)
    assert client.get("/v1/review-queue").status_code == 401
    assert client.get("/v1/review-queue", headers=auth("cp_not-a-key")).status_code == 401
