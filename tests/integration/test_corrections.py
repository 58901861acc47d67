"""Supervisor corrections (PUT /v1/segments/{id}/label), the segment's prediction history, and the
export `callpulse train --tenant` feeds the trainer — against the real Postgres."""

from __future__ import annotations

import json
import threading
import uuid

from sqlalchemy import select, update

from callpulse.cli import _pop_option, export_corrections
from db.models import ApiKey, Segment, SegmentLabel, Tenant
from db.queries.corrections import set_label
from db.session import transaction
from tests.rules_fixtures import allow_loopback_targets, auth, client, seed_recording  # noqa: F401


def _seeded(make_tenant, status: str = "done") -> tuple[uuid.UUID, str, uuid.UUID, list[uuid.UUID]]:
    tenant_id, key = make_tenant(["customer"])
    rec_id, seg_ids = seed_recording(tenant_id, [("customer", "neutral", 0.6, 0.0),
                                                 ("customer", "happy", 0.7, 0.5)], status=status)
    return tenant_id, key, rec_id, seg_ids


def test_label_is_kept_beside_the_prediction_with_who_and_when(client, make_tenant) -> None:
    tenant_id, key, _, seg_ids = _seeded(make_tenant)
    resp = client.put(f"/v1/segments/{seg_ids[0]}/label", headers=auth(key),
                      json={"label": "anger", "note": "customer says 'third time I call'"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # Synonyms map onto the canonical label; the model's answer at that moment is kept beside it.
    assert body["label"] == "angry"
    assert body["model_label"] == "neutral" and body["model_version"] == "1"
    # Who: the key's name and the start of its public id, never characters of the secret.
    with transaction() as s:
        key_id = s.scalar(select(ApiKey.id).where(ApiKey.tenant_id == tenant_id))
    assert key_id is not None and body["labeled_by"] == f"test (key {key_id.hex[:8]})"
    assert key[4:12] not in body["labeled_by"]
    assert body["created_at"] and body["updated_at"]

    segment = client.get(f"/v1/segments/{seg_ids[0]}", headers=auth(key)).json()
    assert segment["label"] == "neutral"  # the model's prediction is never overwritten
    assert segment["correction"]["label"] == "angry"
    assert [p["label"] for p in segment["predictions"]] == ["neutral"]

    # The timeline carries it too, so the dashboard and integrators see both.
    rec_id = segment["recording_id"]
    timeline = client.get(f"/v1/recordings/{rec_id}/timeline", headers=auth(key)).json()
    first = next(s for s in timeline["segments"] if s["id"] == str(seg_ids[0]))
    assert first["correction"]["label"] == "angry" and first["label"] == "neutral"

    # A second PUT replaces the label (one current correction per segment).
    again = client.put(f"/v1/segments/{seg_ids[0]}/label", headers=auth(key), json={"label": "sad"})
    assert again.status_code == 200 and again.json()["label"] == "sad"
    with transaction() as s:
        rows = list(s.scalars(select(SegmentLabel).where(SegmentLabel.tenant_id == tenant_id)))
    assert [(r.segment_id, r.label) for r in rows] == [(seg_ids[0], "sad")]


def test_bad_labels_and_other_tenants_segments_are_refused(client, make_tenant) -> None:
    _, key, _, seg_ids = _seeded(make_tenant)
    _, other_key = make_tenant(["customer"])

    bad = client.put(f"/v1/segments/{seg_ids[0]}/label", headers=auth(key), json={"label": "hangry"})
    assert bad.status_code == 422 and "unknown label 'hangry'" in bad.text
    extra = client.put(f"/v1/segments/{seg_ids[0]}/label", headers=auth(key),
                       json={"label": "sad", "labelled_by": "me"})
    assert extra.status_code == 422
    nul = client.put(f"/v1/segments/{seg_ids[0]}/label", headers=auth(key),
                     json={"label": "sad", "note": "a\x00"})
    assert nul.status_code == 422

    # Another tenant's key cannot read or label the segment: 404, as if it did not exist.
    assert client.put(f"/v1/segments/{seg_ids[0]}/label", headers=auth(other_key),
                      json={"label": "sad"}).status_code == 404
    assert client.get(f"/v1/segments/{seg_ids[0]}", headers=auth(other_key)).status_code == 404
    assert client.put(f"/v1/segments/{uuid.uuid4()}/label", headers=auth(key),
                      json={"label": "sad"}).status_code == 404
    assert client.put(f"/v1/segments/{seg_ids[0]}/label", json={"label": "sad"}).status_code == 401


def test_delete_label(client, make_tenant) -> None:
    _, key, _, seg_ids = _seeded(make_tenant)
    assert client.delete(f"/v1/segments/{seg_ids[1]}/label", headers=auth(key)).status_code == 404
    client.put(f"/v1/segments/{seg_ids[1]}/label", headers=auth(key), json={"label": "happy"})
    assert client.delete(f"/v1/segments/{seg_ids[1]}/label", headers=auth(key)).status_code == 204
    assert client.get(f"/v1/segments/{seg_ids[1]}", headers=auth(key)).json()["correction"] is None


def test_history_lists_every_model_version_newest_first(client, make_tenant) -> None:
    _, key, _, seg_ids = _seeded(make_tenant)
    with transaction() as s:
        from db.models import Prediction

        s.add(Prediction(segment_id=seg_ids[0], model_name="test", model_version="2", label="sad",
                         raw_label="sad", scores={"sad": 1.0}, confidence=0.4, uncertain=True,
                         reasoning=[], reasoning_text="", modalities={"audio": {"label": "sad"}}))
    body = client.get(f"/v1/segments/{seg_ids[0]}", headers=auth(key)).json()
    assert [p["model"]["version"] for p in body["predictions"]] == ["2", "1"]
    assert body["label"] == "sad" and body["uncertain"] is True
    assert body["modalities"] == {"audio": {"label": "sad"}}


def test_train_exports_the_tenants_corrections(client, make_tenant, tmp_path) -> None:
    tenant_id, key, rec_id, seg_ids = _seeded(make_tenant)
    _, other_key, _, other_segs = _seeded(make_tenant)
    client.put(f"/v1/segments/{seg_ids[1]}/label", headers=auth(key), json={"label": "angry"})
    client.put(f"/v1/segments/{other_segs[0]}/label", headers=auth(other_key), json={"label": "sad"})
    with transaction() as s:
        name = s.get(Tenant, tenant_id).name  # type: ignore[union-attr]

    out = tmp_path / "corrections.jsonl"
    assert export_corrections(name, out) == 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    # Only this tenant's correction, with where its audio is and the speaker qualified by call.
    assert lines == [{"media": "/nonexistent/seeded.wav", "channel": 0, "start_s": 5.0, "end_s": 9.5,
                      "label": "angry", "speaker": f"{rec_id}:customer"}]


def test_pop_option_takes_the_tenant_out_of_the_trainers_arguments() -> None:
    assert _pop_option(["--out", "w", "--tenant", "acme", "--eval-only"], "--tenant") == (
        "acme", ["--out", "w", "--eval-only"])
    assert _pop_option(["--tenant=acme"], "--tenant") == ("acme", [])
    assert _pop_option(["--out", "w"], "--tenant") == (None, ["--out", "w"])


def test_policy_skipped_segments_get_no_emotion_label(client, make_tenant) -> None:
    """An agent's segment skipped by the tenant's policy must not become emotion data about them."""
    _, key, _, seg_ids = _seeded(make_tenant)
    with transaction() as s:
        s.execute(update(Segment).where(Segment.id == seg_ids[0]).values(
            analyzed=False, skip_reason="role 'agent' is not analyzed under this tenant's policy"))
        # A segment whose inference failed is still the customer's: it may be labelled.
        s.execute(update(Segment).where(Segment.id == seg_ids[1]).values(
            analyzed=False, skip_reason="inference failed", infer_attempts=1))
    refused = client.put(f"/v1/segments/{seg_ids[0]}/label", headers=auth(key), json={"label": "angry"})
    assert refused.status_code == 409 and "not analyzed under this tenant's policy" in refused.text
    assert client.put(f"/v1/segments/{seg_ids[1]}/label", headers=auth(key),
                      json={"label": "angry"}).status_code == 200


def test_concurrent_labels_of_one_segment_both_succeed(make_tenant) -> None:
    """Two supervisors correcting the same segment at once: no IntegrityError, one label stays."""
    tenant_id, _, _, seg_ids = _seeded(make_tenant)
    with transaction() as s:
        key_id = s.scalars(select(ApiKey.id).where(ApiKey.tenant_id == tenant_id)).one()
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def correct(label: str) -> None:
        try:
            with transaction() as s:
                seg, key = s.get(Segment, seg_ids[0]), s.get(ApiKey, key_id)
                assert seg is not None and key is not None
                barrier.wait(timeout=10)
                set_label(s, seg, tenant_id, label, None, key)
        except BaseException as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=correct, args=(label,)) for label in ("sad", "angry")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    with transaction() as s:
        rows = list(s.scalars(select(SegmentLabel).where(SegmentLabel.segment_id == seg_ids[0])))
    assert len(rows) == 1 and rows[0].label in ("sad", "angry")
