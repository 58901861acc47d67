"""Reading and deleting recordings: detail and progress, the timeline (shape, order, newest
prediction, no N+1), list filters and keyset pagination, tenant isolation, delete."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from api.main import create_app
from db.models import Prediction, Recording, Segment
from db.session import get_engine, transaction
from worker.pipeline.media import audio_store

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def client(broker: str) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def tenant(make_tenant: Callable[..., tuple[uuid.UUID, str]]) -> tuple[uuid.UUID, dict[str, str]]:
    tenant_id, key = make_tenant()
    return tenant_id, {"X-API-Key": key}


def add_recording(tenant_id: uuid.UUID, **fields: Any) -> uuid.UUID:
    values: dict[str, Any] = {"tenant_id": tenant_id, "media_uri": "/nowhere/original.wav",
                              "filename": "call.wav", "channels": 2, "duration_s": 60.0}
    values.update(fields)
    with transaction() as session:
        rec = Recording(**values)
        session.add(rec)
        session.flush()
        return rec.id


def add_segment(recording_id: uuid.UUID, index: int, start_s: float, channel: int = 1,
                role: str = "customer", analyzed: bool = True, skip_reason: str | None = None) -> uuid.UUID:
    with transaction() as session:
        seg = Segment(recording_id=recording_id, index=index, channel=channel, speaker=f"ch{channel}",
                      role=role, start_s=start_s, end_s=start_s + 2.0, analyzed=analyzed,
                      skip_reason=skip_reason)
        session.add(seg)
        session.flush()
        return seg.id


def add_prediction(segment_id: uuid.UUID, version: str, label: str, created_at: datetime,
                   reasoning: list[dict[str, Any]] | None = None) -> None:
    with transaction() as session:
        session.add(Prediction(
            segment_id=segment_id, model_name="embedded", model_version=version, label=label,
            raw_label=label.upper(), scores={label: 0.7, "neutral": 0.3}, valence=-0.4, arousal=0.8,
            confidence=0.7, reasoning=reasoning or [], reasoning_text=f"{version} thinks {label}",
            created_at=created_at,
        ))


def count(model: type[Any], **where: Any) -> int:
    with transaction() as session:
        stmt = select(func.count()).select_from(model)
        for column, value in where.items():
            stmt = stmt.where(getattr(model, column) == value)
        return int(session.scalar(stmt) or 0)


# --- detail and timeline ----------------------------------------------------------------------------

@pytest.fixture
def analysed_call(tenant: Any) -> dict[str, Any]:
    """A call with an agent segment skipped by policy, and customer segments scored twice."""
    tenant_id, _ = tenant
    rec_id = add_recording(tenant_id, external_id="ext-timeline", status="analyzing",
                           channel_roles={"0": "agent", "1": "customer"}, language="en",
                           meta={"queue": "billing"})
    # Inserted out of call order, and two segments start together on different channels.
    late = add_segment(rec_id, index=0, start_s=20.0)
    agent = add_segment(rec_id, index=1, start_s=5.0, channel=0, role="agent", analyzed=False,
                        skip_reason="policy: role 'agent' is not analyzed")
    early = add_segment(rec_id, index=2, start_s=5.0, channel=1)
    pending = add_segment(rec_id, index=3, start_s=30.0)
    evidence = [{"start_s": 6.1, "end_s": 6.8, "modality": "audio", "cue": "pitch", "value": 31.0,
                 "text": "Pitch rose 31% over the caller's baseline."}]
    add_prediction(early, "v1", "neutral", T0)
    add_prediction(early, "v2", "angry", T0 + timedelta(hours=1), evidence)  # newest wins
    add_prediction(late, "v2", "happy", T0 + timedelta(hours=1))
    add_prediction(late, "v1", "sad", T0)
    return {"id": rec_id, "late": late, "agent": agent, "early": early, "pending": pending,
            "evidence": evidence}


def test_detail_reports_status_progress_and_role_counts(client: TestClient, tenant: Any,
                                                        analysed_call: dict[str, Any]) -> None:
    _, headers = tenant
    response = client.get(f"/v1/recordings/{analysed_call['id']}", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(analysed_call["id"])
    assert body["external_id"] == "ext-timeline"
    assert body["status"] == "analyzing" and body["error"] is None
    assert body["progress"] == {"segments_done": 2, "segments_total": 3}
    assert body["role_counts"] == {"agent": {"segments": 1, "analyzed": 0, "predicted": 0},
                                   "customer": {"segments": 3, "analyzed": 3, "predicted": 2}}
    assert body["channel_roles"] == {"0": "agent", "1": "customer"}
    assert body["metadata"] == {"queue": "billing"} and body["language"] == "en"
    assert body["channels"] == 2 and body["duration_s"] == 60.0 and body["has_video"] is False
    assert body["timeline_url"] == f"/v1/recordings/{analysed_call['id']}/timeline"
    for key in ("filename", "created_at", "updated_at", "completed_at"):
        assert key in body


def test_failed_recording_shows_its_reason(client: TestClient, tenant: Any) -> None:
    tenant_id, headers = tenant
    rec_id = add_recording(tenant_id, status="failed", error="the audio could not be decoded",
                           completed_at=T0)
    body = client.get(f"/v1/recordings/{rec_id}", headers=headers).json()
    assert body["status"] == "failed"
    assert body["error"] == "the audio could not be decoded"
    assert body["progress"] == {"segments_done": 0, "segments_total": 0}
    assert body["completed_at"] is not None


def test_timeline_is_in_call_order_with_the_newest_prediction(client: TestClient, tenant: Any,
                                                              analysed_call: dict[str, Any]) -> None:
    _, headers = tenant
    response = client.get(f"/v1/recordings/{analysed_call['id']}/timeline", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["recording_id"] == str(analysed_call["id"])
    assert body["status"] == "analyzing" and body["duration_s"] == 60.0
    segments = body["segments"]
    order = ("agent", "early", "late", "pending")
    assert [s["id"] for s in segments] == [str(analysed_call[k]) for k in order]
    assert [s["start_s"] for s in segments] == [5.0, 5.0, 20.0, 30.0]

    agent, early, late, pending = segments
    assert agent["analyzed"] is False
    assert agent["skip_reason"] == "policy: role 'agent' is not analyzed"
    assert agent["label"] is None and agent["model"] is None and agent["reasoning"] is None

    assert early["label"] == "angry"
    assert early["model"] == {"name": "embedded", "version": "v2"}
    assert early["scores"] == {"angry": 0.7, "neutral": 0.3}
    assert early["valence"] == -0.4 and early["arousal"] == 0.8 and early["confidence"] == 0.7
    # Face/text-only fields (box, label, words) are null on voice evidence.
    assert early["reasoning"] == [{**e, "box": None, "label": None, "words": None}
                                  for e in analysed_call["evidence"]]
    assert early["reasoning_text"] == "v2 thinks angry"
    assert (early["index"], early["role"], early["speaker"], early["channel"]) == (2, "customer", "ch1", 1)
    assert early["end_s"] == 7.0 and early["skip_reason"] is None

    assert late["label"] == "happy" and late["model"]["version"] == "v2"  # not v1's "sad"
    assert pending["analyzed"] is True and pending["label"] is None


def test_timeline_query_count_does_not_grow_with_segments(client: TestClient, tenant: Any) -> None:
    tenant_id, headers = tenant

    def statements_for(segment_count: int) -> int:
        rec_id = add_recording(tenant_id)
        for index in range(segment_count):
            add_prediction(add_segment(rec_id, index, start_s=float(index)), "v1", "neutral", T0)
        seen: list[str] = []

        def record(*args: Any) -> None:
            # The key's last use is noted at most once a minute, whenever the clock says so:
            # it is bookkeeping about the caller, not part of the timeline query.
            if not args[2].lstrip().upper().startswith("UPDATE API_KEY"):
                seen.append(args[2])

        # Once a minute a request also notes the key's last use: let that happen before counting.
        client.get(f"/v1/recordings/{rec_id}", headers=headers)
        event.listen(get_engine(), "before_cursor_execute", record)
        try:
            response = client.get(f"/v1/recordings/{rec_id}/timeline", headers=headers)
        finally:
            event.remove(get_engine(), "before_cursor_execute", record)
        assert len(response.json()["segments"]) == segment_count
        return len(seen)

    assert statements_for(2) == statements_for(12)


def test_empty_timeline_before_segmentation(client: TestClient, tenant: Any) -> None:
    tenant_id, headers = tenant
    rec_id = add_recording(tenant_id)
    body = client.get(f"/v1/recordings/{rec_id}/timeline", headers=headers).json()
    assert body == {
        "recording_id": str(rec_id),
        "status": "received",
        "duration_s": 60.0,
        "language": None,
        "transcript_source": None,
        "segments": [],
    }


def test_unknown_or_malformed_id(client: TestClient, tenant: Any) -> None:
    _, headers = tenant
    missing = uuid.uuid4()
    for path in (f"/v1/recordings/{missing}", f"/v1/recordings/{missing}/timeline"):
        response = client.get(path, headers=headers)
        assert response.status_code == 404
        assert response.json() == {"detail": "recording not found"}
    assert client.delete(f"/v1/recordings/{missing}", headers=headers).status_code == 404
    response = client.get("/v1/recordings/not-a-uuid", headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "recording_id"]


# --- list -----------------------------------------------------------------------------------------

@pytest.fixture
def seven_recordings(tenant: Any) -> list[uuid.UUID]:
    """Seven rows, newest first as the API must order them; two pairs share a created_at."""
    tenant_id, _ = tenant
    stamps = [T0 + timedelta(minutes=m) for m in (0, 10, 10, 20, 30, 30, 40)]
    statuses = ["done", "failed", "done", "received", "done", "analyzing", "done"]
    rows = [(stamp, add_recording(tenant_id, created_at=stamp, status=status, external_id=f"e{i}"))
            for i, (stamp, status) in enumerate(zip(stamps, statuses, strict=True))]
    return [rec_id for _, rec_id in sorted(rows, key=lambda r: (r[0], r[1]), reverse=True)]


def page_through(client: TestClient, headers: dict[str, str], limit: int, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/recordings", headers=headers, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 20, "pagination does not terminate"


def test_cursor_pagination_walks_every_row_once_in_order(client: TestClient, tenant: Any,
                                                          seven_recordings: list[uuid.UUID]) -> None:
    _, headers = tenant
    pages = page_through(client, headers, limit=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [rec_id for page in pages for rec_id in page] == [str(i) for i in seven_recordings]
    # An exact multiple of the page size ends without an empty extra page.
    assert [len(page) for page in page_through(client, headers, limit=7)] == [7]


def test_list_items_carry_status_and_links(client: TestClient, tenant: Any,
                                           seven_recordings: list[uuid.UUID]) -> None:
    _, headers = tenant
    body = client.get("/v1/recordings", headers=headers, params={"limit": 1}).json()
    [item] = body["items"]
    assert item["id"] == str(seven_recordings[0])
    assert item["status"] == "done" and item["external_id"] == "e6"
    assert item["status_url"] == f"/v1/recordings/{item['id']}"
    assert body["next_cursor"]


def test_list_filters(client: TestClient, tenant: Any, seven_recordings: list[uuid.UUID]) -> None:
    _, headers = tenant

    def ids(**params: Any) -> list[str]:
        return [rec_id for page in page_through(client, headers, limit=2, **params) for rec_id in page]

    done = ids(status="done")
    assert len(done) == 4
    assert done == [str(i) for i in seven_recordings if str(i) in done]  # still newest first
    assert len(ids(status="failed")) == 1
    assert len(ids(created_after=(T0 + timedelta(minutes=30)).isoformat())) == 3  # inclusive
    assert len(ids(created_before=(T0 + timedelta(minutes=10)).isoformat())) == 1  # exclusive
    # A datetime without offset is UTC.
    assert len(ids(created_after="2025-03-01T09:10:00", created_before="2025-03-01T09:30:00")) == 3
    assert len(ids(status="done", created_after=(T0 + timedelta(minutes=5)).isoformat())) == 3
    [found] = ids(external_id="e3")
    assert found == str(seven_recordings[3])
    assert ids(external_id="nope") == []


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": 201}, {"status": "sleeping"}, {"created_after": "yesterday"},
    {"cursor": "%%%"}, {"cursor": "bm90LWEtY3Vyc29y"},
    {"cursor": base64.urlsafe_b64encode(f"2025-03-01T09:00:00|{uuid.uuid4()}".encode()).decode()},
    {"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()},
    {"external_id": "a\x00b"},
])
def test_bad_list_parameters_are_422(client: TestClient, tenant: Any, params: dict[str, Any]) -> None:
    _, headers = tenant
    response = client.get("/v1/recordings", headers=headers, params=params)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"][0] == "query" and error["msg"]


# --- tenant isolation and delete ----------------------------------------------------------------

def test_other_tenants_cannot_see_or_delete(client: TestClient, make_tenant: Callable[..., Any],
                                            media_dir: Path) -> None:
    tenant_a, key_a = make_tenant()
    _, key_b = make_tenant()
    rec_id = add_recording(tenant_a, external_id="private")
    add_segment(rec_id, 0, start_s=1.0)
    folder = audio_store.recording_dir(media_dir, tenant_a, rec_id)
    folder.mkdir(parents=True)
    (folder / "original.wav").write_bytes(b"RIFF")
    as_b = {"Authorization": f"Bearer {key_b}"}

    for path in (f"/v1/recordings/{rec_id}", f"/v1/recordings/{rec_id}/timeline"):
        response = client.get(path, headers=as_b)
        assert response.status_code == 404
        assert response.json() == {"detail": "recording not found"}
    assert client.get("/v1/recordings", headers=as_b).json() == {"items": [], "next_cursor": None}
    assert client.get("/v1/recordings", headers=as_b, params={"external_id": "private"}).json()["items"] == []
    assert client.delete(f"/v1/recordings/{rec_id}", headers=as_b).status_code == 404

    assert count(Recording, id=rec_id) == 1
    assert count(Segment, recording_id=rec_id) == 1
    assert (folder / "original.wav").is_file()
    assert client.get(f"/v1/recordings/{rec_id}", headers={"X-API-Key": key_a}).status_code == 200


def test_delete_removes_rows_and_media(client: TestClient, tenant: Any, media_dir: Path,
                                       analysed_call: dict[str, Any]) -> None:
    tenant_id, headers = tenant
    rec_id = analysed_call["id"]
    other = add_recording(tenant_id)
    add_prediction(add_segment(other, 0, start_s=0.0), "v1", "neutral", T0)
    folder = audio_store.recording_dir(media_dir, tenant_id, rec_id)
    folder.mkdir(parents=True)
    (folder / "original.ogg").write_bytes(b"OggS")
    (folder / audio_store.CACHE_NAME).write_bytes(b"\0")
    segment_ids = [analysed_call[k] for k in ("late", "agent", "early", "pending")]

    response = client.delete(f"/v1/recordings/{rec_id}", headers=headers)
    assert response.status_code == 204 and response.content == b""
    assert count(Recording, id=rec_id) == 0
    assert count(Segment, recording_id=rec_id) == 0
    assert sum(count(Prediction, segment_id=seg) for seg in segment_ids) == 0
    assert not folder.exists()
    assert client.get(f"/v1/recordings/{rec_id}", headers=headers).status_code == 404
    assert client.delete(f"/v1/recordings/{rec_id}", headers=headers).status_code == 404
    # The tenant's other recording is untouched.
    assert count(Recording, id=other) == 1 and count(Segment, recording_id=other) == 1
