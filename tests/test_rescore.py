"""POST /v1/recordings/{id}/rescore and the rescore stage: a new model version adds predictions and
keeps the older ones; `force` replaces the current version's; unfinished recordings are refused."""

from __future__ import annotations

import json
import uuid

import redis
from sqlalchemy import select

from callpulse.settings import Settings, get_settings
from db.models import Prediction, Recording, Segment
from db.session import transaction
from tests.rules_fixtures import allow_loopback_targets, auth, client, seed_recording  # noqa: F401
from worker import runtime, stages
from worker.rescore import rescore


def _run(followups: stages.Followups, settings: Settings) -> None:
    """Drain a stage's follow-ups in this process, as `callpulse analyze` does."""
    for rec_id in followups.ingest:
        _run(stages.ingest(rec_id, settings), settings)
    for batch in followups.infer_batches:
        _run(stages.infer(batch, settings), settings)


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

    _run(stages.Followups(ingest=[rec_id]), voice_only)
    first = _versions(rec_id)
    assert set(first) == {old} and len(first[old]) == 3  # the three customer segments

    # A worker running the newer model rescoring the call: new rows for the new version only.
    followups = rescore(rec_id, with_words)
    assert sum(len(b) for b in followups.infer_batches) == 3
    with transaction() as s:
        reopened = s.get(Recording, rec_id)
        assert reopened is not None and reopened.status == "analyzing" and reopened.analysis_round == 1
    _run(followups, with_words)
    second = _versions(rec_id)
    assert second[old] == first[old] and len(second[new]) == 3
    timeline = client.get(f"/v1/recordings/{rec_id}/timeline", headers=auth(key)).json()
    assert timeline["status"] == "done"
    assert {s["model"]["version"] for s in timeline["segments"] if s["label"]} == {new}

    # Nothing is missing for this version: a plain rescore has nothing to do and changes nothing.
    assert rescore(rec_id, with_words).infer_batches == []
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


def test_a_rescored_completion_is_a_new_webhook_message() -> None:
    from worker.events import message_id

    rec_id = uuid.uuid4()
    first = message_id("recording.completed", rec_id)
    # Republishing the same completion (sweep, retry) keeps the id: receivers deduplicate it.
    assert message_id("recording.completed", rec_id, 0) == first
    assert len({first, message_id("recording.completed", rec_id, 1),
                message_id("recording.completed", rec_id, 2)}) == 3
