"""Dynamic batching on the infer queue: one task tops its batch up with other recordings' waiting
segments; results fan back to each recording, and the other recordings' own messages do nothing."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import func, select

from callpulse.settings import get_settings
from db.models import Prediction, Recording, Segment
from db.session import transaction
from tests.rules_fixtures import allow_loopback_targets, auth, client, seed_recording  # noqa: F401
from worker.stages import infer, ingest, lifecycle


def _upload(client, key: str, path) -> uuid.UUID:
    with path.open("rb") as fh:
        resp = client.post("/v1/recordings", headers=auth(key), files={"file": ("call.wav", fh, "audio/wav")},
                           data={"metadata": json.dumps({"channel_roles": {"0": "customer", "1": "agent"}})})
    assert resp.status_code == 202, resp.text
    return uuid.UUID(resp.json()["id"])


def _predicted(rec_id: uuid.UUID) -> int:
    with transaction() as s:
        return int(s.scalar(select(func.count()).select_from(Prediction).join(Segment)
                            .where(Segment.recording_id == rec_id)) or 0)


def test_one_task_runs_segments_of_several_recordings(client, make_tenant, stereo_call, broker) -> None:
    tenant_id, key = make_tenant(["customer"])
    # A waiting call whose media is gone: borrowing its segments must not fail this task.
    broken, _ = seed_recording(tenant_id, [("customer", "neutral", 0.6, 0.0)], predicted=0)
    base = get_settings().model_copy(update={"text_model_enabled": False, "face_model_enabled": False})
    first, second = _upload(client, key, stereo_call), _upload(client, key, stereo_call)
    own = ingest.ingest(first, base).infer_batches
    others = ingest.ingest(second, base).infer_batches
    assert [len(b) for b in own] == [3] and [len(b) for b in others] == [3]

    # Large enough for whatever other tests left waiting in this database (seeded recordings whose
    # media does not exist are borrowed too, and skipped without failing this task).
    batching = base.model_copy(update={"infer_max_batch": 4096, "infer_max_wait_ms": 50})
    followups = infer.infer(own[0], batching)
    # Both calls were scored in that one task, and both are finished by it.
    assert _predicted(first) == 3 and _predicted(second) == 3
    assert {first, second} <= set(followups.completed)
    with transaction() as s:
        statuses = {r.status for r in s.scalars(select(Recording).where(Recording.id.in_([first, second])))}
    assert statuses == {"done"}
    assert _predicted(broken) == 0  # skipped; its own task will record what is wrong with it
    # The second call's own message arrives later and finds nothing to do.
    assert infer.infer(others[0], base) == lifecycle.Followups()


def test_without_batching_a_task_runs_only_its_own_segments(client, make_tenant, stereo_call, broker) -> None:
    _, key = make_tenant(["customer"])
    base = get_settings().model_copy(update={"text_model_enabled": False, "face_model_enabled": False,
                                             "infer_max_batch": 0})
    first, second = _upload(client, key, stereo_call), _upload(client, key, stereo_call)
    own = ingest.ingest(first, base).infer_batches
    ingest.ingest(second, base)
    infer.infer(own[0], base)
    assert _predicted(first) == 3 and _predicted(second) == 0
