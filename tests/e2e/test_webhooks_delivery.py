"""Webhooks through a real Celery worker to a real HTTP receiver on loopback that verifies the
Standard Webhooks signature: alert.fired and recording.completed from an uploaded call, one alert
and one message under duplicate tasks, retries then give-up with the attempt log, redelivery with
the same webhook-id, recording.failed, and the SSRF guard at creation and at delivery."""

from __future__ import annotations

import base64
import itertools
import json
import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from callpulse.settings import Settings, get_settings
from db.models import Alert, Recording, WebhookAttempt, WebhookDelivery
from db.session import transaction
from tests.rules_fixtures import (  # noqa: F401  (fixtures)
    WORKER_ENV,
    Receiver,
    allow_loopback_targets,
    auth,
    client,
    receiver,
    rules_worker,
    seed_recording,
)
from worker.jobs import names
from worker.jobs.app import app as celery_app
from worker.notify import events
from worker.notify import webhooks as notify
from worker.stages import notify as notify_stages

ANGRY = ("customer", "angry", 0.9, -0.7)


def _hook(client: TestClient, key: str, receiver: Receiver, events: list[str], fail_first: int = 0
          ) -> tuple[dict, str]:
    url, path = receiver.endpoint(fail_first=fail_first)
    resp = client.post("/v1/webhooks", headers=auth(key), json={"url": url, "events": events})
    assert resp.status_code == 201, resp.text
    receiver.sign_with(path, resp.json()["secret"])
    return resp.json(), path


def test_signing_matches_the_standard_webhooks_reference_vector() -> None:
    # The example from the Standard Webhooks specification's reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    assert notify.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
    headers = notify.signed_headers(secret, "msg_1", body)
    assert notify.verify(secret, headers, body)
    assert not notify.verify(secret, headers, body + " ")
    assert not notify.verify(notify.new_secret(), headers, body)


def test_ssrf_guard_refuses_private_targets_at_creation(make_tenant) -> None:
    from api.main import create_app

    _, key = make_tenant()
    strict = TestClient(create_app(Settings(webhook_allow_private_targets=False)))
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/", "http://192.168.0.10/",
                "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
                "http://100.64.0.1/", "ftp://93.184.216.34/", "http://no-such-host.invalid/"):
        resp = strict.post("/v1/webhooks", headers=auth(key), json={"url": url, "events": ["alert.fired"]})
        assert resp.status_code == 422, (url, resp.text)
        assert resp.json()["detail"][0]["loc"] == ["body", "url"]
    resp = strict.post("/v1/webhooks", headers=auth(key),
                       json={"url": "https://93.184.216.34/hooks", "events": ["alert.fired", "alert.fired"]})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["events"] == ["alert.fired"] and body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"][6:])) == 32
    assert "secret" not in strict.get(f"/v1/webhooks/{body['id']}", headers=auth(key)).json()
    assert strict.post("/v1/webhooks", headers=auth(key), json={"url": "https://93.184.216.34/",
                                                              "events": ["call.started"]}).status_code == 422
    # Allowing private targets (tests, trusted networks) still never allows the metadata service.
    relaxed = TestClient(create_app(Settings(webhook_allow_private_targets=True)))
    assert relaxed.post("/v1/webhooks", headers=auth(key), json={"url": "http://127.0.0.1:9/",
                                                               "events": ["alert.fired"]}).status_code == 201
    assert relaxed.post("/v1/webhooks", headers=auth(key), json={"url": "http://169.254.169.254/",
                                                               "events": ["alert.fired"]}).status_code == 422


def test_ssrf_guard_is_checked_again_at_delivery(client: TestClient, make_tenant, receiver) -> None:
    tenant_id, key = make_tenant()
    _, path = _hook(client, key, receiver, ["recording.failed"])
    rec_id, _ = seed_recording(tenant_id, [ANGRY], status="failed")
    [delivery_id] = notify_stages.publish_recording_event(rec_id, "recording.failed")
    # The address became private since creation (as if DNS changed): refused, given up, logged.
    from prometheus_client import REGISTRY

    failed_before = REGISTRY.get_sample_value("callpulse_webhook_deliveries_total",
                                              {"outcome": "failed"}) or 0
    assert notify_stages.deliver(delivery_id, Settings(webhook_allow_private_targets=False)) is None
    # ... and counted in the metrics by outcome.
    assert REGISTRY.get_sample_value("callpulse_webhook_deliveries_total",
                                     {"outcome": "failed"}) == failed_before + 1
    time.sleep(0.2)
    assert receiver.at(path) == []
    delivery = client.get(f"/v1/webhooks/deliveries/{delivery_id}", headers=auth(key)).json()
    assert delivery["status"] == "failed" and "target refused" in delivery["attempts"][0]["error"]


def test_alert_fired_and_recording_completed_arrive_signed_from_a_real_worker(
        client: TestClient, make_tenant, receiver, rules_worker, stereo_call: Path) -> None:
    _, key = make_tenant(["customer"])
    hook, path = _hook(client, key, receiver, ["alert.fired", "recording.completed"])
    rule = client.post("/v1/rules", headers=auth(key), json={"name": "any customer emotion", "definition": {
        "cooldown_s": 3600, "roles": ["customer"], "when": {"confidence": {"min": 0}}}}).json()
    meta = {"external_id": f"call-{uuid.uuid4().hex[:8]}", "channel_roles": {"0": "customer", "1": "agent"}}
    with stereo_call.open("rb") as fh:
        resp = client.post("/v1/recordings", headers=auth(key), files={"file": ("call.wav", fh, "audio/wav")},
                           data={"metadata": json.dumps(meta)})
    assert resp.status_code == 202, resp.text
    rec_id = resp.json()["id"]

    got = receiver.wait(path, lambda rs: len(rs) >= 2, timeout=180)
    assert all(r.valid for r in got), "every request carries a valid Standard Webhooks signature"
    by_type = {json.loads(r.body)["type"]: r for r in got}
    fired = events.AlertFired.model_validate_json(by_type["alert.fired"].body)
    done = events.RecordingCompleted.model_validate_json(by_type["recording.completed"].body)
    assert fired.data.rule_id == uuid.UUID(rule["id"]) and fired.data.rule_version == 1
    assert str(fired.data.recording_id) == rec_id and fired.data.external_id == meta["external_id"]
    assert fired.data.evidence and fired.data.severity == "medium"
    assert str(done.data.recording_id) == rec_id and done.data.status == "done"
    time.sleep(1.0)
    assert len(receiver.at(path)) == 2, "one message per event"
    alerts = client.get(f"/v1/alerts?recording_id={rec_id}", headers=auth(key)).json()["items"]
    assert [a["id"] for a in alerts] == [str(fired.data.alert_id)]
    log = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(key)).json()["items"]
    assert {d["status"] for d in log} == {"succeeded"} and all(len(d["attempts"]) == 1 for d in log)


def test_duplicate_task_deliveries_make_one_alert_and_one_message(
        client: TestClient, make_tenant, receiver, rules_worker) -> None:
    tenant_id, key = make_tenant()
    _, path = _hook(client, key, receiver, ["alert.fired"])
    client.post("/v1/rules", headers=auth(key),
                json={"name": "anger", "definition": {"when": {"label": "angry"}}})
    rec_id, _ = seed_recording(tenant_id, [ANGRY, ANGRY])
    for final in (False, False, False, True):
        celery_app.send_task(names.EVALUATE.name, args=[str(rec_id), final])
    got = receiver.wait(path, lambda rs: len(rs) >= 1)
    with transaction() as s:
        delivery_id = s.scalar(select(WebhookDelivery.id).where(WebhookDelivery.tenant_id == tenant_id))
    for _ in range(3):  # the deliver message itself duplicated
        celery_app.send_task(names.DELIVER.name, args=[str(delivery_id)])
    time.sleep(1.5)
    assert len(receiver.at(path)) == 1 and got[0].valid
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(Alert).where(Alert.recording_id == rec_id)) == 1
        assert s.scalar(select(func.count()).select_from(WebhookAttempt)
                        .where(WebhookAttempt.delivery_id == delivery_id)) == 1


def test_receiver_failures_are_retried_then_given_up_and_logged_then_redelivered(
        client: TestClient, make_tenant, receiver, rules_worker) -> None:
    tenant_id, key = make_tenant()
    max_attempts = get_settings().webhook_max_attempts
    _, flaky = _hook(client, key, receiver, ["recording.failed"], fail_first=max_attempts - 1)
    hook, down = _hook(client, key, receiver, ["recording.failed"], fail_first=1000)
    rec_id, _ = seed_recording(tenant_id, [ANGRY], status="failed")
    celery_app.send_task("callpulse.notify.publish_recording_event", args=[str(rec_id), "recording.failed"])

    recovered = receiver.wait(flaky, lambda rs: len(rs) == max_attempts)
    gave_up = receiver.wait(down, lambda rs: len(rs) == max_attempts)
    for attempts in (recovered, gave_up):
        assert len({r.headers["webhook-id"] for r in attempts}) == 1, "receivers dedupe on one id"
        assert len({r.body for r in attempts}) == 1 and all(r.valid for r in attempts)
        gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
        # Backoff that grows: the n-th retry never comes before its delay (base · 2^(n-1), jitter
        # only adds). Arrival times carry the machine's load on top, so only lower bounds hold.
        base, cap = (float(WORKER_ENV[f"CALLPULSE_WEBHOOK_BACKOFF_{k}_S"]) for k in ("BASE", "CAP"))
        assert all(g >= min(cap, base * 2**n) * 0.95 for n, g in enumerate(gaps)), gaps
    deadline = time.monotonic() + 10
    while True:
        log = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(key)).json()["items"]
        if (log and log[0]["status"] == "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    [delivery] = log
    assert delivery["status"] == "failed" and delivery["attempt_count"] == max_attempts
    assert [(a["number"], a["status_code"]) for a in delivery["attempts"]] == [
        (n, 500) for n in range(1, max_attempts + 1)]
    assert delivery["last_error"] == "receiver answered HTTP 500"

    receiver.script[down] = []  # the receiver is fixed: a manual redelivery succeeds, same webhook-id
    resp = client.post(f"/v1/webhooks/deliveries/{delivery['id']}/redeliver", headers=auth(key))
    assert resp.status_code == 202
    again = receiver.wait(down, lambda rs: len(rs) == max_attempts + 1)
    assert again[-1].headers["webhook-id"] == gave_up[0].headers["webhook-id"] and again[-1].valid
    deadline = time.monotonic() + 10
    final = client.get(f"/v1/webhooks/deliveries/{delivery['id']}", headers=auth(key)).json()
    while final["status"] != "succeeded":
        assert time.monotonic() < deadline, final
        time.sleep(0.1)
        final = client.get(f"/v1/webhooks/deliveries/{delivery['id']}", headers=auth(key)).json()
    assert len(final["attempts"]) == max_attempts + 1 and final["attempts"][-1]["status_code"] == 200


def test_recording_failed_webhook_from_the_pipeline(
        client: TestClient, make_tenant, receiver, rules_worker, tmp_path: Path) -> None:
    from worker.jobs.enqueue import enqueue
    from worker.stages import ingest

    tenant_id, key = make_tenant()
    _, path = _hook(client, key, receiver, ["recording.failed", "recording.completed"])
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename="gone.wav", media_uri=str(tmp_path / "gone.wav"))
        s.add(rec)
        s.flush()
        rec_id = rec.id
    followups = ingest.ingest(rec_id, get_settings())
    assert followups.failed == [rec_id]
    enqueue(followups)
    [got] = receiver.wait(path, lambda rs: len(rs) >= 1)
    payload = events.RecordingFailed.model_validate_json(got.body)
    assert got.valid and payload.data.recording_id == rec_id
    assert payload.data.error == "the media file is missing from storage"


def test_payload_schemas_are_served_and_match_the_docs(client: TestClient) -> None:
    served = client.get("/v1/webhooks/schemas").json()
    assert set(served) == {"recording.completed", "recording.failed", "alert.fired", "alert.resolved"}
    docs = Path(__file__).resolve().parents[2] / "docs" / "webhook-payloads.schema.json"
    assert json.loads(docs.read_text()) == served, "regenerate docs/webhook-payloads.schema.json"
