"""Webhook hardening: one attempt is bounded by the timeout as a whole (a slow-drip receiver cannot
hold a worker), the SSRF guard sees IPv4 addresses embedded in IPv6 forms, a DNS failure is retried
rather than given up, a malformed IDNA host is a clear 422, and one broken rule neither blocks the
other rules' alerts nor recording.completed."""

from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from callpulse.settings import Settings
from db.models import Alert, DeliveryStatus, Recording, WebhookAttempt, WebhookDelivery
from db.queries import webhooks as webhooks_q
from db.session import transaction
from tests.rules_fixtures import (  # noqa: F401  (fixtures)
    allow_loopback_targets,
    auth,
    client,
    seed_recording,
)
from worker.notify import webhooks as notify
from worker.stages import notify as notify_stages
from worker.stages import rules as rule_stages

ANGRY = ("customer", "angry", 0.9, -0.7)


@pytest.fixture
def slow_drip_url() -> Iterator[str]:
    """A receiver that answers 200 with its headers at once, then one body byte per 0.5 s for 10 s."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(200)
            self.send_header("content-length", "20")
            self.end_headers()
            try:
                for _ in range(20):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.5)
            except OSError:
                pass  # the sender gave up and closed the connection: what we want

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # daemon threads: close does not wait
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def _endpoint(tenant_id: uuid.UUID, url: str, events: list[str]) -> None:
    # Stored directly: the API would (rightly) refuse a URL that does not resolve.
    with transaction() as s:
        webhooks_q.create_endpoint(s, tenant_id, url, events, "", notify.new_secret())


def _attempts(delivery_id: uuid.UUID) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    with transaction() as s:
        delivery = s.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        attempts = list(s.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)))
        s.expunge_all()
        return delivery, attempts


def test_a_slow_drip_receiver_is_cut_off_at_the_timeout(make_tenant, slow_drip_url: str) -> None:
    tenant_id, _ = make_tenant()
    _endpoint(tenant_id, slow_drip_url, ["recording.failed"])
    rec_id, _ = seed_recording(tenant_id, [ANGRY], status="failed")
    [delivery_id] = notify_stages.publish_recording_event(rec_id, "recording.failed")
    settings = Settings(webhook_allow_private_targets=True, webhook_timeout_s=1.5, webhook_max_attempts=3)
    started = time.monotonic()
    delay = notify_stages.deliver(delivery_id, settings)
    # Generous bound: the body alone takes 10 s, so this only holds if the attempt was cut off.
    assert time.monotonic() - started < 6.0
    assert delay is not None, "a timeout is a failed attempt on the retry path"
    delivery, [attempt] = _attempts(delivery_id)
    assert delivery.status == DeliveryStatus.pending.value
    assert attempt.error is not None and "timeout" in attempt.error


@pytest.mark.parametrize("address", [
    "64:ff9b::7f00:1",            # NAT64 well-known prefix -> 127.0.0.1
    "64:ff9b::a00:1",             # NAT64 -> 10.0.0.1
    "64:ff9b:1::c0a8:1",          # NAT64 local-use prefix -> 192.168.0.1
    "2002:7f00:1::1",             # 6to4 -> 127.0.0.1
    "2002:a00:1::",               # 6to4 -> 10.0.0.1
    "::7f00:1",                   # IPv4-compatible -> 127.0.0.1
    "::a9fe:1",                   # IPv4-compatible -> 169.254.0.1 (link-local)
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
])
def test_ssrf_guard_refuses_ipv4_embedded_in_ipv6(address: str) -> None:
    assert notify.refusal(ipaddress.ip_address(address), allow_private=False) is not None


@pytest.mark.parametrize("address", ["64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "::a9fe:a9fe",
                                     "64:ff9b:1::a9fe:a9fe"])
def test_embedded_metadata_address_is_refused_even_where_private_is_allowed(address: str) -> None:
    reason = notify.refusal(ipaddress.ip_address(address), allow_private=True)
    assert reason is not None and "metadata" in reason


def test_embedded_public_ipv4_is_still_a_valid_target() -> None:
    for address in ("64:ff9b::808:808", "2002:808:808::1"):
        assert notify.refusal(ipaddress.ip_address(address), allow_private=False) is None
    # Private targets allowed (tests, trusted networks): an embedded loopback is allowed like 127.0.0.1.
    assert notify.refusal(ipaddress.ip_address("64:ff9b::7f00:1"), allow_private=True) is None


def test_a_dns_failure_is_retried_not_given_up(make_tenant) -> None:
    tenant_id, _ = make_tenant()
    _endpoint(tenant_id, "http://nonexistent.invalid/hook", ["recording.failed"])
    rec_id, _ = seed_recording(tenant_id, [ANGRY], status="failed")
    [delivery_id] = notify_stages.publish_recording_event(rec_id, "recording.failed")
    delay = notify_stages.deliver(delivery_id, Settings(webhook_allow_private_targets=False,
                                                      webhook_max_attempts=3))
    assert delay is not None and delay > 0
    delivery, [attempt] = _attempts(delivery_id)
    assert delivery.status == DeliveryStatus.pending.value
    assert delivery.next_attempt_at > attempt.started_at, "scheduled on the backoff path"
    assert attempt.error is not None and "not resolved" in attempt.error


def test_a_malformed_idna_host_is_a_clear_refusal(make_tenant) -> None:
    from api.main import create_app

    with pytest.raises(notify.TargetRefused):
        notify.resolve_target("http://xn--/", allow_private=True)
    _, key = make_tenant()
    strict = TestClient(create_app(Settings(webhook_allow_private_targets=False)))
    resp = strict.post("/v1/webhooks", headers=auth(key),
                       json={"url": "http://xn--/", "events": ["alert.fired"]})
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == ["body", "url"]


def test_a_broken_rule_blocks_neither_other_rules_nor_recording_completed(
        client: TestClient, make_tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant_id, key = make_tenant()
    # Told apart by cooldown_s: the evaluator is made to raise for the broken one only.
    broken = client.post("/v1/rules", headers=auth(key), json={"name": "broken", "definition": {
        "cooldown_s": 1234, "when": {"label": "angry"}}})
    good = client.post("/v1/rules", headers=auth(key), json={"name": "good", "definition": {
        "when": {"label": "angry"}}})
    assert broken.status_code == 201 and good.status_code == 201, (broken.text, good.text)
    _endpoint(tenant_id, "http://127.0.0.1:9/unused", ["alert.fired", "recording.completed"])

    real_evaluate = rule_stages.evaluate

    def evaluate(definition: Any, points: Any) -> Any:
        if definition.cooldown_s == 1234:
            raise RuntimeError("evaluator bug")
        return real_evaluate(definition, points)

    monkeypatch.setattr(rule_stages, "evaluate", evaluate)
    rec_id, _ = seed_recording(tenant_id, [ANGRY, ANGRY], status="done")
    deliveries = rule_stages.evaluate_recording(rec_id, final=True)

    with transaction() as s:
        fired = s.scalars(select(Alert.rule_id).where(Alert.recording_id == rec_id)).all()
        types = s.scalars(select(WebhookDelivery.event_type).where(WebhookDelivery.id.in_(deliveries))).all()
        rec = s.get(Recording, rec_id)
        assert rec is not None
        assert rec.final_event_at is not None, "the final pass completed"
    assert set(fired) == {uuid.UUID(good.json()["id"])}
    assert sorted(types) == ["alert.fired", "recording.completed"]
