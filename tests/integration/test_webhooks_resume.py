"""Deliveries that gave up during a long receiver outage are sent once the receiver is back, without
anyone redelivering them by hand: a real HTTP receiver on loopback is down (nothing listens on its
port) while every attempt of a delivery's series fails, then comes up on the same port. While it is
down the delivery sweep probes one delivery per endpoint and interval, never more; once it answers,
every failed delivery of the window gets one more attempt, keeping its webhook-id. Policy refusals
and deliveries older than the window stay failed."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import update

from callpulse.settings import Settings
from db.models import WebhookDelivery, utcnow
from db.queries import webhooks as webhooks_q
from db.session import transaction
from worker.notify import webhooks as notify
from worker.stages import notify as notify_stages

PROBE_S = 1.0
SETTINGS = Settings(webhook_allow_private_targets=True, webhook_max_attempts=2, webhook_backoff_base_s=0.05,
                    webhook_backoff_cap_s=0.1, webhook_timeout_s=2.0, webhook_probe_interval_s=PROBE_S,
                    webhook_resume_window_s=3600.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def receiver_on(port: int, got: list[str]) -> Iterator[None]:
    """A receiver that answers 200 and keeps the webhook-id of every request."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            got.append(self.headers["webhook-id"])
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def _deliver_until_settled(delivery_id: uuid.UUID) -> str:
    """Run the delivery's attempts the way the notify task does, waiting out each backoff."""
    for _ in range(20):
        delay = notify_stages.deliver(delivery_id, SETTINGS)
        if delay is None:
            break
        time.sleep(delay + 0.05)
    with transaction() as s:
        row = s.get(WebhookDelivery, delivery_id)
        assert row is not None
        return row.status


def _resumable(ours: list[uuid.UUID]) -> list[uuid.UUID]:
    """What the delivery sweep resumes now, of this test's deliveries (other modules' endpoints
    may have failed deliveries in the same database)."""
    return [d for d in notify_stages.resumable_deliveries(SETTINGS) if d in ours]


def _status(delivery_id: uuid.UUID) -> str:
    with transaction() as s:
        row = s.get(WebhookDelivery, delivery_id)
        assert row is not None
        return row.status


def test_failed_deliveries_are_resumed_once_the_receiver_is_back(make_tenant) -> None:
    tenant_id, _ = make_tenant()
    port = _free_port()
    with transaction() as s:
        endpoint = webhooks_q.create_endpoint(s, tenant_id, f"http://127.0.0.1:{port}/hook", ["alert.fired"],
                                              "", notify.new_secret())
        ids = [webhooks_q.add_delivery(s, tenant_id, endpoint.id, "alert.fired", f"msg_{uuid.uuid4().hex}",
                                       json.dumps({"n": n})) for n in range(4)]
    ours = [i for i in ids if i is not None]
    first, second, refused, old = ours

    # The outage: every attempt of every series fails (connection refused), each delivery gives up.
    for delivery_id in (first, second, old):
        assert _deliver_until_settled(delivery_id) == "failed"
    with transaction() as s:
        # A policy refusal (the target became private) and a delivery from before the window.
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id == refused).values(
            status="failed", attempts=2, last_error=f"{webhooks_q.REFUSED_PREFIX}: not a public address"))
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id == old).values(
            created_at=utcnow() - timedelta(hours=2)))
    assert _resumable(ours) == []  # failed less than a probe interval ago

    # Still down: one probe for the endpoint per interval, a single attempt, failed again.
    time.sleep(PROBE_S + 0.2)
    probe = _resumable(ours)
    assert len(probe) == 1 and probe[0] in (first, second), probe
    assert _resumable(ours) == []  # the probe is pending: nothing more
    assert _deliver_until_settled(probe[0]) == "failed"
    assert _resumable(ours) == []

    got: list[str] = []
    with receiver_on(port, got):
        # Back: the next probe gets through, and then every other failed delivery of the window.
        time.sleep(PROBE_S + 0.2)
        probe = _resumable(ours)
        assert len(probe) == 1, probe
        assert _deliver_until_settled(probe[0]) == "succeeded"
        rest = _resumable(ours)
        assert set(probe + rest) == {first, second}, (probe, rest)
        for delivery_id in rest:
            assert _deliver_until_settled(delivery_id) == "succeeded"
        assert _resumable(ours) == []
    with transaction() as s:
        message_ids = {d: s.get(WebhookDelivery, d).message_id for d in (first, second)}  # type: ignore[union-attr]
    assert sorted(got) == sorted(message_ids.values()), "each once, with its own webhook-id"
    assert _status(refused) == "failed" and _status(old) == "failed"


def test_resume_is_bounded_by_the_attempt_log(make_tenant) -> None:
    """A receiver that answers other events but always fails one is not asked about it forever."""
    tenant_id, _ = make_tenant()
    with transaction() as s:
        endpoint = webhooks_q.create_endpoint(s, tenant_id, "http://127.0.0.1:9/hook", ["alert.fired"], "",
                                              notify.new_secret())
        delivery_id = webhooks_q.add_delivery(s, tenant_id, endpoint.id, "alert.fired", "msg_poison", "{}")
    assert delivery_id is not None
    for _ in range(2 * SETTINGS.webhook_max_attempts):
        with transaction() as s:
            s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
                status="pending", next_attempt_at=utcnow()))
        notify_stages.deliver(delivery_id, SETTINGS)
    with transaction() as s:
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
            status="failed", updated_at=utcnow() - timedelta(seconds=10)))
    assert notify_stages.resumable_deliveries(SETTINGS).count(delivery_id) == 0
