"""Prometheus metrics: the API's /metrics (requests by route template and status, latency, queue
depths, live streams) and a real worker's own /metrics port (tasks by name and outcome, summed
over its pool processes); pipeline counters as a call is analyzed."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from callpulse import metrics
from callpulse.settings import get_settings
from tests.support import running_worker
from worker.stages import infer, ingest


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app()) as c:
        yield c


def _value(text: str, series: str) -> float | None:
    """The value of one exact series line (name and labels as Prometheus prints them)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_api_metrics_by_route_template_and_status(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    for _ in range(3):
        assert client.get(f"/v1/recordings/{uuid.uuid4()}", headers={"X-API-Key": key}).status_code == 404
    assert client.get("/v1/recordings", headers={"X-API-Key": "cpk_wrong"}).status_code == 401
    text = client.get("/metrics").text
    route = 'route="/v1/recordings/{recording_id}"'
    # Ids never become labels: three different ids are one series.
    assert (_value(text, f'callpulse_http_requests_total{{method="GET",{route},status="404"}}') or 0) >= 3
    assert (_value(text, 'callpulse_http_requests_total{method="GET",route="/v1/recordings",status="401"}')
            or 0) >= 1
    assert (_value(text, f'callpulse_http_request_duration_seconds_count{{method="GET",{route}}}') or 0) >= 3
    assert not re.search(r"route=\"/v1/recordings/[0-9a-f]{8}-", text)

    # Queue depths are the broker's own numbers at scrape time.
    broker = redis.Redis.from_url(get_settings().broker_url)
    broker.rpush("notify", b"not a real message")
    try:
        text = client.get("/metrics").text
        assert _value(text, 'callpulse_queue_depth{queue="notify"}') == broker.llen("notify")
        assert _value(text, 'callpulse_queue_depth{queue="infer"}') == broker.llen("infer")
    finally:
        broker.lrem("notify", 0, b"not a real message")


def test_live_streams_open_gauge(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    before = REGISTRY.get_sample_value("callpulse_live_streams_open") or 0.0
    # Authenticated, so the server keeps the socket open waiting for the start message (a socket
    # without a key is closed at once, which would race the reading below).
    with client.websocket_connect("/v1/live", headers={"X-API-Key": key}):
        assert REGISTRY.get_sample_value("callpulse_live_streams_open") == before + 1
    deadline = time.monotonic() + 5
    while REGISTRY.get_sample_value("callpulse_live_streams_open") != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert REGISTRY.get_sample_value("callpulse_live_streams_open") == before


def test_pipeline_counts_segments_audio_and_model_load(make_tenant, stereo_call, media_dir) -> None:
    """An in-process analysis (as `callpulse analyze` runs it) moves the counters by what it did."""
    from sqlalchemy import func, select

    from db.models import Prediction, Recording, Segment
    from db.session import transaction

    tenant_id, _ = make_tenant(["customer"])
    settings = get_settings().model_copy(update={"text_model_enabled": False, "face_model_enabled": False,
                                                 "uncertain_below": 0.49})  # a model of its own: loaded here
    segments0 = REGISTRY.get_sample_value("callpulse_segments_analyzed_total") or 0.0
    audio0 = REGISTRY.get_sample_value("callpulse_audio_analyzed_seconds_total") or 0.0
    loads0 = REGISTRY.get_sample_value("callpulse_model_load_seconds_count", {"backend": "embedded"}) or 0.0
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename="call.wav", media_uri=str(stereo_call),
                        channels=2, channel_roles={"0": "customer", "1": "agent"}, duration_s=36.0)
        s.add(rec)
        s.flush()
        rec_id = rec.id
    followups = ingest.ingest(rec_id, settings)
    for batch in followups.infer_batches:
        infer.infer(batch, settings)
    with transaction() as s:
        spans = s.execute(select(func.count(), func.sum(Segment.end_s - Segment.start_s))
                          .select_from(Prediction).join(Segment)
                          .where(Segment.recording_id == rec_id)).one()
    assert spans[0] > 0
    assert REGISTRY.get_sample_value("callpulse_segments_analyzed_total") == segments0 + spans[0]
    audio = REGISTRY.get_sample_value("callpulse_audio_analyzed_seconds_total") or 0.0
    assert audio - audio0 == pytest.approx(spans[1], rel=1e-6)
    loads = REGISTRY.get_sample_value("callpulse_model_load_seconds_count", {"backend": "embedded"})
    assert loads == loads0 + 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_worker_serves_task_metrics_of_its_pool(broker: str) -> None:
    from worker.jobs.app import app

    port = _free_port()
    env = {"CALLPULSE_WORKER_METRICS_PORT": str(port)}
    # Prefork with one child: the task runs in another process than the one serving /metrics.
    args = ("--queues", "notify", "--concurrency", "1", "--pool", "prefork")
    with running_worker("metrics", args, env=env):
        app.send_task("callpulse.notify.sweep_deliveries")
        series = 'callpulse_tasks_total{outcome="success",task="callpulse.notify.sweep_deliveries"}'
        deadline, text = time.monotonic() + 180, ""  # a loaded machine starts pool processes slowly
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    text = resp.read().decode()
            except OSError as exc:  # the server thread may still be starting on a loaded machine
                text = f"metrics port {port} not answering: {exc}"
            if _value(text, series):
                break
            time.sleep(0.5)
        assert _value(text, series) == 1.0, text[-3000:]
        duration = 'callpulse_task_duration_seconds_count{task="callpulse.notify.sweep_deliveries"}'
        assert _value(text, duration) == 1
        assert 'callpulse_queue_depth{queue="notify"}' in text


def test_metric_names_are_the_documented_ones() -> None:
    names = {m.name for m in REGISTRY.collect()}
    for name in ("callpulse_http_requests", "callpulse_http_request_duration_seconds", "callpulse_tasks",
                 "callpulse_task_duration_seconds", "callpulse_segments_analyzed",
                 "callpulse_audio_analyzed_seconds", "callpulse_model_load_seconds",
                 "callpulse_webhook_deliveries", "callpulse_live_streams_open",
                 "callpulse_retention_deleted"):
        assert name in names, name
    assert metrics.QUEUES == ("ingest", "asr", "infer", "rules", "notify")


def test_metrics_token_when_set(make_tenant) -> None:
    """With CALLPULSE_METRICS_TOKEN, the API's and a worker's /metrics ask for it."""
    from api.main import create_app

    settings = get_settings().model_copy(update={"metrics_token": "s3cret-scrape"})
    with TestClient(create_app(settings)) as guarded:
        assert guarded.get("/metrics").status_code == 401
        assert guarded.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = guarded.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
        assert ok.status_code == 200 and "callpulse_queue_depth" in ok.text

    port = _free_port()
    server = metrics.serve(port, get_settings().broker_url, host="127.0.0.1", token="s3cret-scrape")
    assert server is not None
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Authorization": "Bearer s3cret-scrape"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200 and b"callpulse_tasks" in resp.read()
    finally:
        server.shutdown()
        server.server_close()
