"""POST /v1/recordings against real Postgres, Redis and ffmpeg: auth, the happy path and its queue
message, idempotency (including the insert race), every kind of bad upload, size limits, probes."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import select, update

from api.main import create_app
from api.routes import recordings as recordings_route
from callpulse.settings import get_settings
from db.models import ApiKey, Recording
from db.recovery_models import OutboxMessage
from db.session import transaction
from worker.jobs.app import app as celery_app

DEMO = Path(__file__).resolve().parents[2] / "callpulse" / "examples" / "demo_call.ogg"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-v", "error", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Valid and broken uploads, cut from the real demo call or synthesised by ffmpeg."""
    root = tmp_path_factory.mktemp("uploads")
    files = {name: root / name for name in
             ("stereo.ogg", "mono.wav", "truncated.wav", "noise.mp3", "empty.wav", "video.mp4", "blip.wav")}
    ffmpeg("-i", str(DEMO), "-ss", "5", "-t", "4", "-c", "copy", str(files["stereo.ogg"]))
    ffmpeg("-i", str(DEMO), "-ss", "5", "-t", "3", "-ac", "1", "-ar", "16000", str(files["mono.wav"]))
    wav = files["mono.wav"].read_bytes()
    files["truncated.wav"].write_bytes(wav[: len(wav) // 2])  # header still promises the full length
    files["noise.mp3"].write_bytes(random.Random(7).randbytes(20_000))
    files["empty.wav"].write_bytes(b"")
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=2:size=64x64:rate=10", "-c:v", "mpeg4",
           str(files["video.mp4"]))
    ffmpeg("-i", str(DEMO), "-ss", "5", "-t", "0.05", "-ac", "1", str(files["blip.wav"]))
    return files


@pytest.fixture
def client(broker: str) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture
def tenant(make_tenant: Callable[..., tuple[uuid.UUID, str]]) -> tuple[uuid.UUID, dict[str, str]]:
    tenant_id, key = make_tenant()
    return tenant_id, {"Authorization": f"Bearer {key}"}


def upload(client: TestClient, headers: dict[str, str], path: Path, metadata: Any = None,
           filename: str | None = None) -> Any:
    data = {} if metadata is None else {
        "metadata": metadata if isinstance(metadata, str) else json.dumps(metadata)}
    with path.open("rb") as fh:
        return client.post("/v1/recordings", headers=headers, data=data,
                           files={"file": (filename or path.name, fh, "application/octet-stream")})


def recording_rows(tenant_id: uuid.UUID) -> list[Recording]:
    with transaction() as session:
        return list(session.scalars(select(Recording).where(Recording.tenant_id == tenant_id)))


def tenant_files(media_dir: Path, tenant_id: uuid.UUID) -> list[Path]:
    return [p for p in (media_dir / str(tenant_id)).rglob("*") if p.is_file()]


def ingest_messages(broker_url: str) -> list[dict[str, Any]]:
    """The kombu redis transport keeps a queue's pending messages in a list named after it."""
    raw = redis.Redis.from_url(broker_url).lrange("ingest", 0, -1)
    return [json.loads(item) for item in raw]


def task_args(message: dict[str, Any]) -> list[Any]:
    body = json.loads(base64.b64decode(message["body"]))
    return list(body[0])


# --- auth -------------------------------------------------------------------------------------

def test_missing_or_wrong_key_is_401_with_bearer_challenge(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer cpk_nope"}, {"X-API-Key": "cpk_nope"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}):
        response = client.get("/v1/recordings", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["detail"]


def test_unauthenticated_upload_is_401_not_a_validation_error(client: TestClient,
                                                              media: dict[str, Path]) -> None:
    response = upload(client, {}, media["noise.mp3"], metadata="{not json")
    assert response.status_code == 401


def test_both_header_styles_authenticate(client: TestClient, make_tenant: Callable[..., Any]) -> None:
    _, key = make_tenant()
    assert client.get("/v1/recordings", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/v1/recordings", headers={"X-API-Key": key}).status_code == 200


def test_revoked_key_is_401(client: TestClient, make_tenant: Callable[..., Any]) -> None:
    tenant_id, key = make_tenant()
    with transaction() as session:
        session.execute(update(ApiKey).where(ApiKey.tenant_id == tenant_id)
                        .values(revoked_at=datetime.now(UTC)))
    assert client.get("/v1/recordings", headers={"X-API-Key": key}).status_code == 401


# --- happy path ---------------------------------------------------------------------------------

def test_upload_stereo_call_is_stored_and_enqueued(client: TestClient, tenant: Any, media: dict[str, Path],
                                                   media_dir: Path, broker: str) -> None:
    tenant_id, headers = tenant
    meta = {"external_id": "call-001", "channel_roles": {"0": "Agent", "1": " CUSTOMER "},
            "language": "en", "metadata": {"queue": "billing", "agent_id": 42}}
    response = upload(client, headers, media["stereo.ogg"], meta)

    assert response.status_code == 202, response.text
    body = response.json()
    rec_id = body["id"]
    assert body["status"] == "received"
    assert body["external_id"] == "call-001"
    assert body["status_url"] == f"/v1/recordings/{rec_id}"
    assert body["timeline_url"] == f"/v1/recordings/{rec_id}/timeline"
    assert response.headers["location"] == body["status_url"]

    [row] = recording_rows(tenant_id)
    assert str(row.id) == rec_id
    assert row.status == "received"
    assert row.channels == 2 and row.has_video is False and row.container == "ogg"
    assert row.channel_roles == {"0": "agent", "1": "customer"}
    assert row.meta == {"queue": "billing", "agent_id": 42} and row.language == "en"
    assert row.duration_s is not None and 3.5 < row.duration_s < 4.5
    stored = Path(row.media_uri)
    assert stored.is_absolute() and stored.is_file()
    assert stored.parent == media_dir / str(tenant_id) / rec_id
    assert row.size_bytes == stored.stat().st_size == media["stereo.ogg"].stat().st_size

    ours = [m for m in ingest_messages(broker) if task_args(m) == [rec_id]]
    assert len(ours) == 1
    assert ours[0]["headers"]["task"] == recordings_route.INGEST_TASK


def test_ingest_task_name_matches_the_worker() -> None:
    tasks = pytest.importorskip("worker.jobs.ingest")
    assert tasks.ingest_recording.name == recordings_route.INGEST_TASK


def test_row_is_committed_before_the_task_is_sent(client: TestClient, tenant: Any, media: dict[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def send_task(name: str, args: list[str], **_: Any) -> None:
        # What a worker would see if it took the message this instant: a separate connection.
        with transaction() as session:
            seen["row"] = session.get(Recording, uuid.UUID(args[0]))
        seen["name"] = name

    monkeypatch.setattr(celery_app, "send_task", send_task)
    _, headers = tenant
    response = upload(client, headers, media["mono.wav"])
    assert response.status_code == 202
    assert seen["name"] == recordings_route.INGEST_TASK
    assert seen["row"] is not None and str(seen["row"].id) == response.json()["id"]
    assert seen["row"].status == "received"


def test_upload_survives_a_broker_outage(client: TestClient, tenant: Any, media: dict[str, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def broker_down(*_: Any, **__: Any) -> None:
        raise BrokerError("Error 111 connecting to redis. Connection refused.")

    monkeypatch.setattr(celery_app, "send_task", broker_down)
    tenant_id, headers = tenant
    response = upload(client, headers, media["mono.wav"])
    assert response.status_code == 202
    [row] = recording_rows(tenant_id)
    assert row.status == "received"
    # The ingest message waits in the outbox, sent as soon as the broker is back.
    with transaction() as session:
        kept = session.scalars(select(OutboxMessage)
                               .where(OutboxMessage.task == recordings_route.INGEST_TASK)).all()
        assert [m.args for m in kept if m.args == [str(row.id)]] == [[str(row.id)]]
        for m in kept:
            session.delete(m)


# --- idempotency --------------------------------------------------------------------------------

def test_repeat_external_id_returns_the_existing_recording(client: TestClient, tenant: Any,
                                                           media: dict[str, Path], media_dir: Path) -> None:
    tenant_id, headers = tenant
    first = upload(client, headers, media["stereo.ogg"], {"external_id": "dup-1"})
    again = upload(client, headers, media["mono.wav"], {"external_id": "dup-1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.json().keys() == first.json().keys()
    assert len(recording_rows(tenant_id)) == 1
    assert len(tenant_files(media_dir, tenant_id)) == 1


def test_external_id_race_is_settled_by_the_unique_constraint(
        client: TestClient, tenant: Any, media: dict[str, Path], media_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id, headers = tenant
    first = upload(client, headers, media["stereo.ogg"], {"external_id": "race-1"})
    assert first.status_code == 202

    # Make the route's pre-check miss, as if the other upload committed right after it looked.
    real_lookup = recordings_route.queries.get_recording_by_external_id
    calls = {"n": 0}

    def lookup_missing_once(*args: Any) -> Any:
        calls["n"] += 1
        return None if calls["n"] == 1 else real_lookup(*args)

    monkeypatch.setattr(recordings_route.queries, "get_recording_by_external_id", lookup_missing_once)
    second = upload(client, headers, media["mono.wav"], {"external_id": "race-1"})
    assert calls["n"] == 2  # the insert really ran into the constraint and looked the winner up
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert len(recording_rows(tenant_id)) == 1
    assert len(tenant_files(media_dir, tenant_id)) == 1  # the loser's copy was removed


def test_same_external_id_in_two_tenants_is_two_recordings(client: TestClient, make_tenant: Any,
                                                           media: dict[str, Path]) -> None:
    ids = []
    for _ in range(2):
        _, key = make_tenant()
        response = upload(client, {"X-API-Key": key}, media["mono.wav"], {"external_id": "shared"})
        assert response.status_code == 202
        ids.append(response.json()["id"])
    assert ids[0] != ids[1]


# --- bad uploads ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "status", "reason"), [
    ("truncated.wav", 422, "truncated"),
    ("noise.mp3", 415, "not decodable"),
    ("empty.wav", 422, "empty"),
    ("video.mp4", 422, "no audio track"),
    ("blip.wav", 422, "too short"),
])
def test_unusable_media_is_rejected_without_leftovers(client: TestClient, tenant: Any,
                                                      media: dict[str, Path], media_dir: Path,
                                                      name: str, status: int, reason: str) -> None:
    tenant_id, headers = tenant
    response = upload(client, headers, media[name], {"external_id": f"bad-{name}"})
    assert response.status_code == status, response.text
    assert reason in response.json()["detail"]
    assert str(media_dir) not in response.text  # no server paths in reasons
    assert recording_rows(tenant_id) == []
    assert tenant_files(media_dir, tenant_id) == []


def test_missing_file_field_is_422(client: TestClient, tenant: Any) -> None:
    _, headers = tenant
    response = client.post("/v1/recordings", headers=headers, data={"metadata": "{}"})
    assert response.status_code == 422
    assert any(err["loc"][-1] == "file" for err in response.json()["detail"])


@pytest.mark.parametrize(("metadata", "where", "words"), [
    ("{oops", ["body", "metadata"], "json"),
    ('["not", "an", "object"]', ["body", "metadata"], "object"),
    ({"external_id": "x", "externalId": "y"}, ["body", "metadata", "externalId"], "not permitted"),
    ({"channel_roles": {"9": "agent"}}, ["body", "metadata", "channel_roles"], "channel index"),
    ({"channel_roles": {"left": "agent"}}, ["body", "metadata", "channel_roles"], "channel index"),
    ({"channel_roles": {"0": "a" * 40}}, ["body", "metadata", "channel_roles"], "1-32 characters"),
    ({"channel_roles": {"0": ""}}, ["body", "metadata", "channel_roles"], "1-32 characters"),
    ({"channel_roles": {"0": 3}}, ["body", "metadata", "channel_roles", "0"], "string"),
    ({"external_id": ""}, ["body", "metadata", "external_id"], "at least 1"),
    ({"metadata": "flat"}, ["body", "metadata", "metadata"], "object"),
    # Values Postgres would refuse on INSERT must be a 422, not a 500.
    ({"external_id": "a\x00b"}, ["body", "metadata", "external_id"], "NUL"),
    ({"language": "en\x00"}, ["body", "metadata", "language"], "NUL"),
    ({"metadata": {"note": ["ok", "a\x00b"]}}, ["body", "metadata", "metadata"], "NUL"),
    ('{"metadata": {"score": NaN}}', ["body", "metadata", "metadata"], "non-finite"),
    ('{"metadata": {"score": 1e400}}', ["body", "metadata", "metadata"], "non-finite"),
])
def test_bad_metadata_is_422_with_a_reason(client: TestClient, tenant: Any, media: dict[str, Path],
                                           media_dir: Path, metadata: Any, where: list[str],
                                           words: str) -> None:
    tenant_id, headers = tenant
    response = upload(client, headers, media["stereo.ogg"], metadata)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == where
    assert words.lower() in error["msg"].lower()
    assert recording_rows(tenant_id) == []
    assert tenant_files(media_dir, tenant_id) == []


def test_channel_roles_for_a_channel_the_media_lacks_is_422(client: TestClient, tenant: Any,
                                                            media: dict[str, Path], media_dir: Path) -> None:
    tenant_id, headers = tenant
    response = upload(client, headers, media["mono.wav"], {"channel_roles": {"0": "agent", "1": "customer"}})
    assert response.status_code == 422
    assert "1 channel" in response.json()["detail"][0]["msg"]
    assert recording_rows(tenant_id) == []
    assert tenant_files(media_dir, tenant_id) == []


# --- size limits ----------------------------------------------------------------------------------

@pytest.fixture
def small_limit_client(broker: str) -> Iterator[TestClient]:
    settings = get_settings().model_copy(update={"max_upload_bytes": 8_000})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_file_over_the_limit_is_413_and_leaves_nothing(small_limit_client: TestClient, tenant: Any,
                                                       media: dict[str, Path], media_dir: Path) -> None:
    tenant_id, headers = tenant
    # 11 KB: passes the raw-body cap (limit + envelope allowance), caught while copying to disk.
    assert 8_000 < media["stereo.ogg"].stat().st_size < 1_000_000
    response = upload(small_limit_client, headers, media["stereo.ogg"])
    assert response.status_code == 413
    assert "8000 bytes" in response.json()["detail"]
    assert recording_rows(tenant_id) == []
    assert tenant_files(media_dir, tenant_id) == []


def test_request_body_over_the_cap_is_413_before_parsing(small_limit_client: TestClient, tenant: Any,
                                                         tmp_path: Path) -> None:
    tenant_id, headers = tenant
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * 1_200_000)  # beyond limit + multipart allowance
    response = upload(small_limit_client, headers, big)
    assert response.status_code == 413
    assert "8000 bytes" in response.json()["detail"]
    assert recording_rows(tenant_id) == []


def test_chunked_body_over_the_cap_is_413(small_limit_client: TestClient, tenant: Any) -> None:
    tenant_id, headers = tenant

    def body() -> Iterator[bytes]:  # no Content-Length: the limit must count what arrives
        yield b"--cut\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        for _ in range(20):
            yield b"\0" * 100_000

    response = small_limit_client.post(
        "/v1/recordings", content=body(),
        headers={**headers, "Content-Type": "multipart/form-data; boundary=cut"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert "8000 bytes" in response.json()["detail"]
    assert recording_rows(tenant_id) == []


# --- probes -----------------------------------------------------------------------------------------

def test_liveness_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": {"ok": True, "detail": ""},
                                      "broker": {"ok": True, "detail": ""}}


def test_readiness_reports_an_unreachable_broker(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(celery_app.conf, "broker_url", "redis://127.0.0.1:1/0")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["database"]["ok"] is True
    assert checks["broker"] == {"ok": False, "detail": "OperationalError"}


def test_openapi_documents_the_contract(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "CallPulse"
    assert {"/v1/recordings", "/v1/recordings/{recording_id}", "/v1/recordings/{recording_id}/timeline",
            "/healthz", "/readyz"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
