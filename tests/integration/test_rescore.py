"""POST /v1/recordings/{id}/rescore and the rescore stage: a new model version adds predictions and
keeps the older ones; `force` replaces the current version's; unfinished recordings are refused."""

from __future__ import annotations

import json
import uuid

import redis
from sqlalchemy import select, update

from callpulse.settings import Settings, get_settings
from db.models import Prediction, Recording, Segment, WebhookDelivery, utcnow
from db.session import transaction
from tests.rules_fixtures import allow_loopback_targets, auth, client, seed_recording  # noqa: F401
from worker import runtime
from worker.stages import infer, ingest, lifecycle
from worker.stages import rules as rule_stages
from worker.stages.rescore import rescore


def _run(followups: lifecycle.Followups, settings: Settings) -> None:
    """Drain a stage's follow-ups in this process, as `callpulse analyze` does."""
    for rec_id in followups.ingest:
        _run(ingest.ingest(rec_id, settings), settings)
    for batch in followups.infer_batches:
        _run(infer.infer(batch, settings), settings)


def _versions(rec_id: uuid.UUID) -> dict[str, set[uuid.UUID]]:
    with transaction() as s:
        rows = s.execute(select(Prediction.model_version, Prediction.id).join(Segment)
                         .where(Segment.recording_id == rec_id))
        out: dict[str, set[uuid.UUID]] = {}
        for version, pred_id in rows:
            out.setdefault(version, set()).add(pred_id)
        return out


def _upload(client, key: str, path) -> uuid.UUID:
    meta = {"channel_roles": {"0": "customer", "1": "agent"}}
    with path.open("rb") as fh:
        resp = client.post("/v1/recordings", headers=auth(key), files={"file": ("call.wav", fh, "audio/wav")},
                           data={"metadata": json.dumps(meta)})
    assert resp.status_code == 202, resp.text
    return uuid.UUID(resp.json()["id"])


def test_new_version_adds_predictions_and_keeps_the_old(client, make_tenant, stereo_call, broker) -> None:
    _, key = make_tenant(["customer"])
    rec_id = _upload(client, key, stereo_call)
    voice_only = get_settings().model_copy(update={"text_model_enabled": False, "face_model_enabled": False})
    with_words = get_settings().model_copy(update={"text_model_enabled": True, "face_model_enabled": False})
    old = runtime.emotion_model(voice_only).version
    new = runtime.emotion_model(with_words).version
    assert new != old and new.startswith(old + ";text-minilm-v1+")

    _run(lifecycle.Followups(ingest=[rec_id]), voice_only)
    first = _versions(rec_id)
    assert set(first) == {old} and len(first[old]) == 3  # the three customer segments
    # Not before its completion event is out (a rescore now would lose it).
    assert rescore(rec_id, with_words).infer_batches == []
    rule_stages.evaluate_recording(rec_id, final=True)  # what the rules queue does at completion

    # A worker running the newer model rescoring the call: new rows for the new version only.
    followups = rescore(rec_id, with_words, expected_round=0)
    assert sum(len(b) for b in followups.infer_batches) == 3
    # The same request delivered twice: the round moved on, the duplicate does nothing.
    assert rescore(rec_id, with_words, force=True, expected_round=0).infer_batches == []
    with transaction() as s:
        reopened = s.get(Recording, rec_id)
        assert reopened is not None and reopened.status == "analyzing" and reopened.analysis_round == 1
    _run(followups, with_words)
    second = _versions(rec_id)
    assert second[old] == first[old] and len(second[new]) == 3
    timeline = client.get(f"/v1/recordings/{rec_id}/timeline", headers=auth(key)).json()
    assert timeline["status"] == "done"
    assert {s["model"]["version"] for s in timeline["segments"] if s["label"]} == {new}
    rule_stages.evaluate_recording(rec_id, final=True)

    # Nothing is missing for this version: a plain rescore has nothing to do, changes nothing, and
    # says so on the recording; asked to, it evaluates the rules again instead.
    idle = rescore(rec_id, with_words)
    assert idle.infer_batches == [] and idle.evaluate_rules == []
    detail = client.get(f"/v1/recordings/{rec_id}", headers=auth(key)).json()
    assert detail["status"] == "done" and detail["last_rescore"]["outcome"] == "nothing_to_do"
    assert "nothing to do" in detail["last_rescore"]["message"] and detail["last_rescore"]["segments"] == 0
    assert detail["last_rescore"]["model_version"] == new
    rerun = rescore(rec_id, with_words, rerun_rules=True)
    assert rerun.infer_batches == [] and rerun.evaluate_rules == [rec_id]
    detail = client.get(f"/v1/recordings/{rec_id}", headers=auth(key)).json()
    last = detail["last_rescore"]
    assert last["rules_rerun"] is True and "evaluated again" in last["message"]
    # force re-runs the current version (its rows are replaced); older versions stay untouched.
    forced = rescore(rec_id, with_words, force=True)
    _run(forced, with_words)
    third = _versions(rec_id)
    assert third[old] == first[old]
    assert len(third[new]) == 3 and not third[new] & second[new]


def test_rescore_endpoint(client, make_tenant, broker) -> None:
    tenant_id, key = make_tenant(["customer"])
    _, other_key = make_tenant(["customer"])
    running, _ = seed_recording(tenant_id, [("customer", "neutral", 0.6, 0.0)], status="analyzing")
    done, _ = seed_recording(tenant_id, [("customer", "neutral", 0.6, 0.0)], status="done")

    busy = client.post(f"/v1/recordings/{running}/rescore", headers=auth(key))
    assert busy.status_code == 409 and "still being analyzed" in busy.text
    unpublished = client.post(f"/v1/recordings/{done}/rescore", headers=auth(key))
    assert unpublished.status_code == 409 and "still being published" in unpublished.text
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == done).values(final_event_at=utcnow()))
    assert client.post(f"/v1/recordings/{done}/rescore", headers=auth(other_key)).status_code == 404
    assert client.post(f"/v1/recordings/{done}/rescore", headers=auth(key),
                       json={"force": "sometimes"}).status_code == 422

    queue = redis.Redis.from_url(broker)
    before = queue.llen("infer")
    resp = client.post(f"/v1/recordings/{done}/rescore", headers=auth(key), json={"force": True})
    assert resp.status_code == 202, resp.text
    assert resp.json()["force"] is True and resp.json()["status_url"].endswith(str(done))
    # The task waits on the infer queue: the worker that runs the model decides what is pending.
    assert queue.llen("infer") == before + 1
    message = json.loads(queue.lindex("infer", 0) or b"{}")
    assert message["headers"]["task"] == "callpulse.rescore_recording"
    assert message["headers"]["argsrepr"] == repr([str(done), True, 0, False])  # the round it saw
    asked = client.post(f"/v1/recordings/{done}/rescore", headers=auth(key), json={"rerun_rules": True})
    assert asked.status_code == 202 and asked.json()["rerun_rules"] is True
    sent = json.loads(queue.lindex("infer", 0) or b"{}")
    assert sent["headers"]["argsrepr"] == repr([str(done), False, 0, True])


def test_a_rescored_completion_is_a_new_webhook_message() -> None:
    from worker.notify.events import message_id

    rec_id = uuid.uuid4()
    first = message_id("recording.completed", rec_id)
    # Republishing the same completion (sweep, retry) keeps the id: receivers deduplicate it.
    assert message_id("recording.completed", rec_id, 0) == first
    assert len({first, message_id("recording.completed", rec_id, 1),
                message_id("recording.completed", rec_id, 2)}) == 3


def test_rescore_retries_failed_segments_and_publishes_a_new_completion(client, make_tenant, stereo_call,
                                                                        broker) -> None:
    _, key = make_tenant(["customer"])
    hook = client.post("/v1/webhooks", headers=auth(key),
                       json={"url": "http://127.0.0.1:9/hook", "events": ["recording.completed"]})
    assert hook.status_code == 201, hook.text
    rec_id = _upload(client, key, stereo_call)
    settings = get_settings().model_copy(update={"text_model_enabled": False, "face_model_enabled": False})
    _run(lifecycle.Followups(ingest=[rec_id]), settings)
    rule_stages.evaluate_recording(rec_id, final=True)
    with transaction() as s:
        # One customer segment broke the model twice; one agent segment is skipped by policy.
        broken = s.scalars(select(Segment).where(Segment.recording_id == rec_id, Segment.role == "customer")
                           .order_by(Segment.index)).first()
        assert broken is not None
        s.execute(Prediction.__table__.delete().where(Prediction.segment_id == broken.id))
        broken.analyzed, broken.skip_reason, broken.infer_attempts = False, "inference failed: boom", 2
        policy = s.scalars(select(Segment).where(Segment.recording_id == rec_id,
                                                 Segment.role == "agent")).first()
        assert policy is not None and not policy.analyzed and policy.infer_attempts == 0
        broken_id, policy_id = broken.id, policy.id

    followups = rescore(rec_id, settings, expected_round=0)
    assert [i for batch in followups.infer_batches for i in batch] == [broken_id]
    _run(followups, settings)
    with transaction() as s:
        assert s.get(Segment, broken_id).analyzed is True  # type: ignore[union-attr]
        assert s.get(Segment, policy_id).analyzed is False  # type: ignore[union-attr]
    rule_stages.evaluate_recording(rec_id, final=True)
    from worker.notify.events import message_id

    with transaction() as s:
        ids = set(s.scalars(select(WebhookDelivery.message_id)))
    assert {message_id("recording.completed", rec_id, 0), message_id("recording.completed", rec_id, 1)} <= ids
