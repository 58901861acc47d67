"""Abuse limits at the API's edge, each attack performed against the real app, Postgres and Redis:
guessing keys (API and dashboard login) from one address, hammering with one key, escaping the
limits with a forged X-Forwarded-For, redelivering a webhook in a loop, probing the internal network
through the SSRF guard's message, and a 20 MB request header against a real `callpulse api`."""

from __future__ import annotations

import os
import random
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from api.client_ip import client_ip
from callpulse.settings import Settings, get_settings
from db.models import WebhookDelivery, WebhookEndpoint
from db.session import transaction
from tests.dashboard_fixtures import login_form_token

ROOT = Path(__file__).resolve().parents[2]


def _address() -> str:
    # Each test its own client address, so counters of other tests (same window) do not interfere.
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def _client(address: str | None = None, **limits: object) -> TestClient:
    from api.main import create_app

    settings = get_settings().model_copy(update=limits)
    return TestClient(create_app(settings), follow_redirects=False, client=(address or _address(), 40000))


def test_guessing_api_keys_from_one_address_is_stopped(make_tenant) -> None:
    _, key = make_tenant()
    with _client(auth_failures_per_ip=3, auth_failure_window_s=600.0) as client:
        for _ in range(3):
            guess = {"X-API-Key": f"cpk_{uuid.uuid4().hex}"}
            assert client.get("/v1/recordings", headers=guess).status_code == 401
        # Past the limit even the right key waits: a guess that hits gains nothing.
        refused = client.get("/v1/recordings", headers={"X-API-Key": key})
        assert refused.status_code == 429 and 0 < int(refused.headers["retry-after"]) <= 600
        assert "failed authentication" in refused.json()["detail"]
        # A forged X-Forwarded-For does not make a new address: no proxy is trusted.
        forged = client.get("/v1/recordings", headers={"X-API-Key": key, "X-Forwarded-For": _address()})
        assert forged.status_code == 429
    with _client(auth_failures_per_ip=3, auth_failure_window_s=600.0) as elsewhere:
        assert elsewhere.get("/v1/recordings", headers={"X-API-Key": key}).status_code == 200


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(make_tenant) -> None:
    _, key = make_tenant()
    proxy = _address()
    with _client(proxy, auth_failures_per_ip=2, trusted_proxies=[proxy]) as client:
        guesser = _address()
        for _ in range(2):
            client.get("/v1/recordings", headers={"X-API-Key": "cpk_x", "X-Forwarded-For": guesser})
        assert client.get("/v1/recordings", headers={"X-API-Key": key,
                                                     "X-Forwarded-For": guesser}).status_code == 429
        # Another client behind the same proxy is not punished for the guesser.
        assert client.get("/v1/recordings", headers={"X-API-Key": key,
                                                     "X-Forwarded-For": _address()}).status_code == 200


def _request(peer: str, forwarded: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (peer, 1)})


def test_client_ip_walks_back_past_our_own_proxies() -> None:
    settings = Settings(trusted_proxies=["10.0.0.0/8", "fd00::1"])
    assert client_ip(_request("203.0.113.9", "1.2.3.4"), settings) == "203.0.113.9"  # not a proxy
    assert client_ip(_request("10.0.0.5", "1.2.3.4, 10.0.0.7"), settings) == "1.2.3.4"
    # The client wrote its own X-Forwarded-For; the proxy appended the real address: that one counts.
    assert client_ip(_request("10.0.0.5", "6.6.6.6, 198.51.100.7"), settings) == "198.51.100.7"
    assert client_ip(_request("fd00::1", None), settings) == "fd00::1"
    with pytest.raises(ValueError):
        Settings(trusted_proxies=["not-an-address"])


def test_dashboard_login_attempts_are_limited(make_tenant) -> None:
    _, key = make_tenant()
    with _client(login_attempts_per_ip=2) as client:
        token = login_form_token(client)
        for _ in range(2):
            assert client.post("/dashboard/login", data={"api_key": "cpk_wrong", "csrf_token": token}
                               ).status_code == 401
        refused = client.post("/dashboard/login", data={"api_key": key, "csrf_token": token})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "Too many login attempts" in refused.text


def test_one_key_cannot_hammer_the_api(make_tenant) -> None:
    _, key = make_tenant()
    with _client(api_requests_per_key_per_minute=3) as client:
        codes = [client.get("/v1/recordings", headers={"X-API-Key": key}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]


def _delivery(tenant_id: uuid.UUID) -> uuid.UUID:
    with transaction() as s:
        endpoint = WebhookEndpoint(tenant_id=tenant_id, url="https://receiver.example/hook",
                                   events=["alert.fired"], secret="whsec_x")
        s.add(endpoint)
        s.flush()
        delivery = WebhookDelivery(tenant_id=tenant_id, endpoint_id=endpoint.id, event_type="alert.fired",
                                   message_id=f"msg_{uuid.uuid4().hex}", body="{}", status="failed")
        s.add(delivery)
        s.flush()
        return delivery.id


def test_redelivery_is_throttled(make_tenant, broker: str) -> None:
    tenant_id, key = make_tenant()
    first, second, third = (_delivery(tenant_id) for _ in range(3))
    auth = {"X-API-Key": key}
    with _client(webhook_redeliveries_per_minute=2, webhook_redeliver_interval_s=600.0) as client:
        assert client.post(f"/v1/webhooks/deliveries/{first}/redeliver", headers=auth).status_code == 202
        again = client.post(f"/v1/webhooks/deliveries/{first}/redeliver", headers=auth)
        assert again.status_code == 429 and "this delivery" in again.json()["detail"]
        assert int(again.headers["retry-after"]) > 0
        # The tenant's own budget: two a minute here (the refused one above counted too).
        assert client.post(f"/v1/webhooks/deliveries/{second}/redeliver", headers=auth).status_code == 429
        assert client.post(f"/v1/webhooks/deliveries/{third}/redeliver", headers=auth).status_code == 429
    # Another tenant's key cannot redeliver (or throttle) this tenant's deliveries.
    _, other_key = make_tenant()
    with _client() as client:
        resp = client.post(f"/v1/webhooks/deliveries/{third}/redeliver", headers={"X-API-Key": other_key})
        assert resp.status_code == 404


@pytest.mark.parametrize("url", ["http://localhost:8080/hook", "http://127.0.0.1/x", "http://[::1]/",
                                 "http://metadata.google.internal/"])
def test_ssrf_refusal_says_not_public_without_naming_addresses(make_tenant, url: str) -> None:
    _, key = make_tenant()
    with _client() as client:
        resp = client.post("/v1/webhooks", headers={"X-API-Key": key},
                           json={"url": url, "events": ["alert.fired"]})
    assert resp.status_code == 422, resp.text
    message = resp.json()["detail"][0]["msg"]
    assert "not a public address" in message and "CALLPULSE_WEBHOOK_ALLOW_PRIVATE_TARGETS" in message
    host = httpx.URL(url).host
    for leak in ({"127.0.0.1", "::1", "loopback", "resolves to", "metadata address"} - {host}):
        assert leak not in message, message


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def api_server(database: str) -> Iterator[tuple[str, int]]:
    port = _free_port()
    env = {**os.environ, "CALLPULSE_SESSION_SECRET": uuid.uuid4().hex, "CALLPULSE_MAX_HEADER_BYTES": "65536"}
    proc = subprocess.Popen([sys.executable, "-m", "callpulse.cli", "api", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "api did not start"
        time.sleep(0.2)
    yield "127.0.0.1", port
    proc.terminate()
    proc.wait(timeout=10)


def test_a_20_mb_header_is_refused_before_it_is_read(api_server: tuple[str, int]) -> None:
    host, port = api_server
    chunk = b"a" * 65536
    sent, answer = 0, b""
    with socket.socket() as sock:
        # Small buffers, so "sent" is close to what the server took in.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sock.settimeout(10)
        sock.connect((host, port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            while sent < 20 * 1024 * 1024:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(chunk)
                sent += len(chunk)
            answer = sock.recv(4096)
        except (BrokenPipeError, ConnectionResetError):
            pass
    # Refused after about the limit (plus what the kernel buffers), not after 20 MB: without the
    # bound the server takes in all of it and waits for the rest of the header.
    assert sent < 8 * 1024 * 1024, f"the server took {sent} bytes of headers"
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]  # a reason, not a reset
    # Headers under the limit still work, and the server is fine.
    ok = httpx.get(f"http://{host}:{port}/healthz", headers={"X-Fine": "b" * 8000}, timeout=10)
    assert ok.status_code == 200


def test_a_body_read_with_the_headers_does_not_count_as_headers(api_server: tuple[str, int],
                                                                 make_tenant) -> None:
    """Headers and 200 KB of upload in one write: the server's first reads carry both, and only the
    headers count toward the limit (an upload larger than the limit used to get a 431 at random)."""
    host, port = api_server
    _, key = make_tenant()
    boundary = b"b0undary"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="x.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n" + b"x" * 200_000 + b"\r\n--" + boundary + b"--\r\n")
    head = (b"POST /v1/recordings HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key.encode() +
            b"\r\nContent-Type: multipart/form-data; boundary=" + boundary +
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    # The upload reached the app, which read it and refused the bytes as media: not a 431.
    assert answer.startswith(b"HTTP/1.1 415"), answer[:300]


def test_the_431_answer_names_the_setting(api_server: tuple[str, int]) -> None:
    host, port = api_server
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431") and b"CALLPULSE_MAX_HEADER_BYTES" in answer


def test_live_stream_keys_are_counted_like_every_other_way_in(make_tenant) -> None:
    from starlette.websockets import WebSocketDisconnect

    _, key = make_tenant()
    with _client(auth_failures_per_ip=1) as client:
        for headers, reason, code in (({"X-API-Key": "cpk_wrong"}, "invalid or revoked", 4401),
                                      ({"X-API-Key": key}, "failed authentication", 4429)):
            with client.websocket_connect("/v1/live", headers=headers) as ws:
                ws.send_text('{"event": "start", "sample_rate": 16000, "channels": 1}')
                assert reason in ws.receive_json()["reason"]
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_json()
                assert closed.value.code == code


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "amqp://guest@127.0.0.1//"])
def test_limits_step_aside_when_redis_is_unreachable(make_tenant, url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from api import rate_limit

    # The limiter leaves Redis alone for a few seconds after a failure; start (and end) with none.
    monkeypatch.setattr(rate_limit, "_skip_until", 0.0)
    _, key = make_tenant()
    with _client(auth_failures_per_ip=1, rate_limit_url=url) as client:
        for _ in range(3):
            assert client.get("/v1/recordings", headers={"X-API-Key": "cpk_wrong"}).status_code == 401
        assert client.get("/v1/recordings", headers={"X-API-Key": key}).status_code == 200
