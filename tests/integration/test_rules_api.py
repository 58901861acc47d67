"""Rules and alerts through the API and the stage functions (no worker): CRUD and versions, 422s,
alerts mid-recording, one alert per episode under duplicates, backtest = live, tenant isolation."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from callpulse.settings import get_settings
from db.models import Alert, Recording, Segment, WebhookDelivery, utcnow
from db.session import transaction
from tests.rules_fixtures import (  # noqa: F401  (fixtures)
    add_prediction,
    allow_loopback_targets,
    auth,
    client,
    receiver,
    seed_recording,
)
from worker.stages import infer, ingest
from worker.stages import rules as rule_stages

ANGRY_FOR_TWO = {"severity": "high", "roles": ["customer"],
                 "when": {"sustained": {"segments": 2, "condition": {"label": "angry"}}}}
ANGRY, CALM = ("customer", "angry", 0.9, -0.7), ("customer", "neutral", 0.8, 0.1)


def _rule(client: TestClient, key: str, definition: dict, name: str = "angry customer") -> dict:
    resp = client.post("/v1/rules", headers=auth(key), json={"name": name, "definition": definition})
    assert resp.status_code == 201, resp.text
    return resp.json()


def _alerts(recording_id: uuid.UUID) -> list[Alert]:
    with transaction() as s:
        return list(s.scalars(select(Alert).where(Alert.recording_id == recording_id)
                              .order_by(Alert.fired_at_s)))


def test_rule_crud_and_versions(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    rule = _rule(client, key, ANGRY_FOR_TWO)
    assert (rule["version"], rule["severity"], rule["enabled"]) == (1, "high", True)
    rid = rule["id"]

    edited = {**ANGRY_FOR_TWO, "severity": "critical"}
    body = {"name": "angrier", "definition": edited}
    resp = client.put(f"/v1/rules/{rid}", headers=auth(key), json=body)
    assert resp.status_code == 200 and resp.json()["version"] == 2 and resp.json()["severity"] == "critical"
    # The same definition again is not an edit of it: no new version.
    assert client.put(f"/v1/rules/{rid}", headers=auth(key), json=body).json()["version"] == 2

    resp = client.patch(f"/v1/rules/{rid}", headers=auth(key), json={"enabled": False})
    assert resp.json()["enabled"] is False and resp.json()["version"] == 2
    disabled = client.get("/v1/rules?enabled=false", headers=auth(key)).json()["items"]
    assert [r["id"] for r in disabled] == [rid]
    assert client.get("/v1/rules?enabled=true", headers=auth(key)).json()["items"] == []

    versions = client.get(f"/v1/rules/{rid}/versions", headers=auth(key)).json()["items"]
    assert [(v["version"], v["severity"]) for v in versions] == [(1, "high"), (2, "critical")]
    assert versions[0]["definition"] == ANGRY_FOR_TWO

    assert client.delete(f"/v1/rules/{rid}", headers=auth(key)).status_code == 204
    assert client.get(f"/v1/rules/{rid}", headers=auth(key)).status_code == 404


def test_rules_accept_yaml(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    yaml_body = ("name: drop in valence\ndefinition:\n  cooldown_s: 120\n  when:\n"
                 "    trend: {metric: valence, drop: 0.5, within_s: 60}\n")
    yaml_headers = {**auth(key), "Content-Type": "application/yaml"}
    resp = client.post("/v1/rules", headers=yaml_headers, content=yaml_body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["definition"]["when"]["trend"]["drop"] == 0.5
    # The definition alone may be a YAML string inside a JSON body too.
    resp = client.post("/v1/rules", headers=auth(key),
                       json={"name": "y", "definition": "when:\n  label: [angry, disgust]\n"})
    assert resp.status_code == 201 and resp.json()["definition"] == {"when": {"label": ["angry", "disgust"]}}


@pytest.mark.parametrize(("body", "loc"), [
    ({"name": "x", "definition": {"when": {"label": "furious"}}}, ["body", "definition", "when", "label"]),
    ({"name": "x", "definition": {"when": {"sustained": {"segments": 0, "condition": {"label": "angry"}}}}},
     ["body", "definition", "when", "sustained", "segments"]),
    ({"name": "x", "definition": {"severity": "urgent", "when": {"label": "angry"}}},
     ["body", "definition", "severity"]),
    ({"name": "x", "definition": "when: [oops"}, ["body", "definition"]),
    ({"definition": {"when": {"label": "angry"}}}, ["body", "name"]),
    ({"name": "x", "definition": {"when": {"label": "angry"}}, "colour": "red"}, ["body", "colour"]),
    ({"name": "x", "definition": {"when": {"words": {"any": ["a\x00b"]}}}}, ["body", "definition"]),
])
def test_invalid_rules_get_422_naming_the_place(client: TestClient, make_tenant, body: dict, loc: list
                                                ) -> None:
    _, key = make_tenant()
    resp = client.post("/v1/rules", headers=auth(key), json=body)
    assert resp.status_code == 422, resp.text
    assert any(err["loc"] == loc for err in resp.json()["detail"]), resp.json()
    resp = client.post("/v1/rules", headers={**auth(key), "Content-Type": "application/yaml"}, content="a: [")
    assert resp.status_code == 422


def test_alert_fires_mid_recording_through_real_stages(client: TestClient, make_tenant,
                                                       stereo_call: Path) -> None:
    tenant_id, key = make_tenant(["customer"])
    # Any prediction at all of the customer: fires at the first one, and once (long cooldown).
    rule = _rule(client, key, {"cooldown_s": 3600, "roles": ["customer"], "when": {"confidence": {"min": 0}}})
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename="call.wav", media_uri=str(stereo_call),
                        channel_roles={"0": "customer", "1": "agent"})
        s.add(rec)
        s.flush()
        rec_id = rec.id
    settings = get_settings()
    batch = ingest.ingest(rec_id, settings).infer_batches[0]
    first = infer.infer(batch[:1], settings)
    assert first.evaluate_rules == [rec_id] and first.completed == []

    rule_stages.evaluate_recording(rec_id, final=False)
    alerts = _alerts(rec_id)
    with transaction() as s:
        status = s.get(Recording, rec_id).status  # type: ignore[union-attr]
        first_index = s.scalar(select(Segment.index).where(Segment.id == batch[0]))
    assert status == "analyzing", "the alert exists before the call is done"
    assert len(alerts) == 1 and alerts[0].window_key == f"seg-{first_index}"
    assert alerts[0].rule_id == uuid.UUID(rule["id"]) and alerts[0].rule_version == 1

    rest = infer.infer(batch, settings)
    assert rest.completed == [rec_id]
    rule_stages.evaluate_recording(rec_id, final=True)
    assert [a.id for a in _alerts(rec_id)] == [alerts[0].id]  # the final pass adds no second alert


def test_duplicate_and_concurrent_evaluations_make_one_alert_and_one_event(
        client: TestClient, make_tenant, receiver) -> None:
    tenant_id, key = make_tenant()
    url, _ = receiver.endpoint()
    assert client.post("/v1/webhooks", headers=auth(key), json={"url": url, "events": ["alert.fired"]}
                       ).status_code == 201
    _rule(client, key, ANGRY_FOR_TWO)
    rec_id, _ = seed_recording(tenant_id, [CALM, ANGRY, ANGRY, ANGRY])

    results: list[list[uuid.UUID]] = []
    threads = [threading.Thread(target=lambda: results.append(rule_stages.evaluate_recording(rec_id, False)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.append(rule_stages.evaluate_recording(rec_id, False))
    assert len(_alerts(rec_id)) == 1
    assert sum(len(r) for r in results) == 1, "exactly one alert.fired delivery across all runs"
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(WebhookDelivery)
                        .where(WebhookDelivery.tenant_id == tenant_id)) == 1


def test_backtest_equals_live_evaluation_and_creates_nothing(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    definition = {"roles": ["customer"], "cooldown_s": 8, "when": {"any": [
        {"sustained": {"segments": 2, "condition": {"label": "angry"}}},
        {"trend": {"metric": "valence", "drop": 0.6, "within_s": 12}},
    ]}}
    calls = [
        [CALM, ANGRY, ANGRY, CALM, ("agent", "neutral", 0.9, 0.0), ANGRY, ANGRY, ANGRY],
        [ANGRY, CALM, ANGRY, CALM],
        [CALM, ("customer", "sad", 0.7, -0.8), CALM, CALM, ANGRY, ANGRY],
    ]
    started = utcnow() - timedelta(seconds=1)
    recordings = []
    # Live: predictions land one at a time and the rules are evaluated after each, then once more.
    rule = _rule(client, key, definition)
    for specs in calls:
        rec_id, seg_ids = seed_recording(tenant_id, specs, predicted=0)
        recordings.append(rec_id)
        for seg_id, (_, label, prob, valence) in zip(seg_ids, specs, strict=True):
            with transaction() as s:
                add_prediction(s, seg_id, label, prob, valence)
            rule_stages.evaluate_recording(rec_id, final=False)
        rule_stages.evaluate_recording(rec_id, final=True)
    live = sorted((a.recording_id, a.window_key, a.first_segment_index, a.last_segment_index, a.fired_at_s,
                   a.start_s, a.end_s, json.dumps(a.evidence, sort_keys=True))
                  for r in recordings for a in _alerts(r))
    assert len(live) >= 4

    window = {"from": started.isoformat(), "to": (utcnow() + timedelta(seconds=1)).isoformat()}
    resp = client.post(f"/v1/rules/{rule['id']}/backtest", headers=auth(key), json=window)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["recordings_evaluated"] == 3 and out["truncated"] is False
    backtest = sorted((uuid.UUID(f["recording_id"]), f["window_key"], f["first_segment_index"],
                       f["last_segment_index"], f["fired_at_s"], f["start_s"], f["end_s"],
                       json.dumps(f["evidence"], sort_keys=True))
                      for f in out["firings"])
    assert backtest == live

    # A new rule's backtest stores no alert.
    other = _rule(client, key, {"when": {"label": "angry"}}, name="any anger")
    resp = client.post(f"/v1/rules/{other['id']}/backtest", headers=auth(key), json=window)
    assert len(resp.json()["firings"]) >= 3
    with transaction() as s:
        assert s.scalar(select(func.count()).select_from(Alert)
                        .where(Alert.rule_id == uuid.UUID(other["id"]))) == 0
    bad = client.post(f"/v1/rules/{rule['id']}/backtest", headers=auth(key),
                      json={"from": utcnow().isoformat(), "to": started.isoformat()})
    assert bad.status_code == 422


def test_alerts_list_filter_acknowledge_resolve(client: TestClient, make_tenant, receiver) -> None:
    tenant_id, key = make_tenant()
    url, _ = receiver.endpoint()
    client.post("/v1/webhooks", headers=auth(key), json={"url": url, "events": ["alert.resolved"]})
    rule = _rule(client, key, {"severity": "low", "when": {"label": "angry"}})
    rec_a, _ = seed_recording(tenant_id, [ANGRY, CALM, ANGRY])
    rec_b, _ = seed_recording(tenant_id, [ANGRY])
    for rec in (rec_a, rec_b):
        rule_stages.evaluate_recording(rec, final=False)

    items = client.get("/v1/alerts", headers=auth(key)).json()["items"]
    assert len(items) == 3 and {a["rule_id"] for a in items} == {rule["id"]}
    page = client.get("/v1/alerts?limit=2", headers=auth(key)).json()
    rest = client.get(f"/v1/alerts?limit=2&cursor={page['next_cursor']}", headers=auth(key)).json()
    assert len(page["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    only_a = client.get(f"/v1/alerts?recording_id={rec_a}&severity=low", headers=auth(key)).json()["items"]
    assert len(only_a) == 2 and all(a["evidence"] for a in only_a)

    alert_id = only_a[0]["id"]
    acked = client.post(f"/v1/alerts/{alert_id}/acknowledge", headers=auth(key),
                        json={"note": "on it"}).json()
    assert acked["state"] == "acknowledged" and acked["note"] == "on it" and acked["acknowledged_at"]
    assert client.get("/v1/alerts?state=acknowledged", headers=auth(key)).json()["items"][0]["id"] == alert_id
    resolved = client.post(f"/v1/alerts/{alert_id}/resolve", headers=auth(key)).json()
    assert resolved["state"] == "resolved" and resolved["resolved_at"]
    assert client.post(f"/v1/alerts/{alert_id}/resolve", headers=auth(key)).status_code == 200
    assert client.post(f"/v1/alerts/{alert_id}/acknowledge", headers=auth(key)).status_code == 409
    with transaction() as s:
        events = list(s.scalars(select(WebhookDelivery.event_type)
                                .where(WebhookDelivery.tenant_id == tenant_id)))
    assert events == ["alert.resolved"]  # once, though resolve was sent twice


def test_tenant_isolation_of_rules_alerts_and_webhooks(client: TestClient, make_tenant, receiver) -> None:
    tenant_a, key_a = make_tenant()
    _, key_b = make_tenant()
    url, _ = receiver.endpoint()
    hook = client.post("/v1/webhooks", headers=auth(key_a),
                       json={"url": url, "events": ["alert.fired"]}).json()
    rule = _rule(client, key_a, {"when": {"label": "angry"}})
    rec, _ = seed_recording(tenant_a, [ANGRY])
    rule_stages.evaluate_recording(rec, final=False)
    alert = client.get("/v1/alerts", headers=auth(key_a)).json()["items"][0]
    with transaction() as s:
        delivery_id = s.scalar(select(WebhookDelivery.id)
                               .where(WebhookDelivery.endpoint_id == uuid.UUID(hook["id"])))
    window = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    r, a, w, d = rule["id"], alert["id"], hook["id"], delivery_id
    for method, path, body in [
        ("GET", f"/v1/rules/{r}", None),
        ("PUT", f"/v1/rules/{r}", {"name": "x", "definition": {"when": {"label": "sad"}}}),
        ("PATCH", f"/v1/rules/{r}", {"enabled": False}), ("GET", f"/v1/rules/{r}/versions", None),
        ("POST", f"/v1/rules/{r}/backtest", window), ("DELETE", f"/v1/rules/{r}", None),
        ("GET", f"/v1/alerts/{a}", None), ("POST", f"/v1/alerts/{a}/acknowledge", None),
        ("POST", f"/v1/alerts/{a}/resolve", None), ("GET", f"/v1/webhooks/{w}", None),
        ("GET", f"/v1/webhooks/{w}/deliveries", None), ("DELETE", f"/v1/webhooks/{w}", None),
        ("GET", f"/v1/webhooks/deliveries/{d}", None),
        ("POST", f"/v1/webhooks/deliveries/{d}/redeliver", None),
    ]:
        resp = client.request(method, path, headers=auth(key_b), json=body)
        assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
    for path in ("/v1/rules", "/v1/alerts", "/v1/webhooks"):
        assert client.get(path, headers=auth(key_b)).json()["items"] == []
    # And tenant A still has everything, untouched.
    assert client.get(f"/v1/rules/{r}", headers=auth(key_a)).json()["enabled"] is True
    assert client.get(f"/v1/alerts/{a}", headers=auth(key_a)).json()["state"] == "open"
