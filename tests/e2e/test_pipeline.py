"""End to end through the real services: upload (API) → Redis → a real Celery worker process →
Postgres → timeline; plus idempotent re-runs of every stage and the stuck-recording sweep."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from callpulse.settings import get_settings
from db.models import Prediction, Recording, Segment, utcnow
from db.session import transaction
from tests.support import running_worker
from worker.pipeline.labels import CANONICAL_LABELS
from worker.stages import infer, ingest, sweep


@pytest.fixture(scope="module")
def celery_worker(broker: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process consuming every queue, as `callpulse worker` runs it in production."""
    with running_worker("pipeline") as proc:
        yield proc


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app()) as c:
        yield c


def _wait_final(client: TestClient, key: str, rec_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v1/recordings/{rec_id}", headers={"X-API-Key": key}).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"recording still {body.get('status')} after {timeout} s: {body}")


def _counts(rec_id: uuid.UUID) -> tuple[int, int]:
    with transaction() as s:
        segs = s.scalar(select(func.count()).select_from(Segment).where(Segment.recording_id == rec_id))
        preds = s.scalar(
            select(func.count()).select_from(Prediction).join(Segment).where(Segment.recording_id == rec_id)
        )
        return int(segs or 0), int(preds or 0)


def test_upload_to_timeline_through_real_worker(client, make_tenant, celery_worker, stereo_call) -> None:
    _, key = make_tenant(["customer"])
    meta = {"external_id": f"call-{uuid.uuid4().hex[:8]}", "channel_roles": {"0": "customer", "1": "agent"}}
    with stereo_call.open("rb") as fh:
        resp = client.post("/v1/recordings", headers={"Authorization": f"Bearer {key}"},
                           files={"file": ("call.wav", fh, "audio/wav")}, data={"metadata": json.dumps(meta)})
    assert resp.status_code == 202, resp.text
    rec_id = resp.json()["id"]

    status = _wait_final(client, key, rec_id)
    assert status["status"] == "done", status
    assert status["progress"]["segments_done"] == status["progress"]["segments_total"] > 0

    timeline = client.get(f"/v1/recordings/{rec_id}/timeline", headers={"X-API-Key": key}).json()
    segments = timeline["segments"]
    by_role: dict[str, list[dict]] = {}
    for seg in segments:
        by_role.setdefault(seg["role"], []).append(seg)
    # The example call has three utterances per side, about 5 s each.
    assert len(by_role["customer"]) == 3 and len(by_role["agent"]) == 3
    starts = [s["start_s"] for s in segments]
    assert starts == sorted(starts)
    assert all(s["channel"] == 0 for s in by_role["customer"])
    for seg in by_role["customer"]:
        assert seg["label"] in CANONICAL_LABELS
        assert abs(sum(seg["scores"].values()) - 1.0) < 1e-3
        assert -1.0 <= seg["valence"] <= 1.0 and 0.0 <= seg["arousal"] <= 1.0
        assert seg["model"]["name"] == "embedded"
        assert seg["reasoning"], "every analyzed segment carries evidence"
        for item in seg["reasoning"]:
            assert seg["start_s"] - 1e-6 <= item["start_s"] <= item["end_s"] <= seg["end_s"] + 1e-6
            assert item["modality"] == "audio" and item["text"]
    for seg in by_role["agent"]:
        # Policy: employees' emotions are not inferred; the segment stays with its times and the reason.
        assert seg.get("label") is None
        assert "AI Act" in seg["skip_reason"]

    # Duplicate delivery of both tasks through the broker changes nothing.
    from worker.jobs.infer import infer_segments
    from worker.jobs.ingest import ingest_recording

    before = _counts(uuid.UUID(rec_id))
    ingest_recording.delay(rec_id)
    infer_segments.delay([s["id"] for s in by_role["customer"]])
    time.sleep(3)
    assert _counts(uuid.UUID(rec_id)) == before


def test_stages_are_idempotent_when_rerun(make_tenant, stereo_call, media_dir) -> None:
    tenant_id, _ = make_tenant(["customer"])
    rec_id = _recording(tenant_id, stereo_call, {"0": "customer", "1": "agent"})
    settings = get_settings()

    first = ingest.ingest(rec_id, settings)
    segs, preds = _counts(rec_id)
    assert segs == 6 and preds == 0
    assert sum(len(b) for b in first.infer_batches) == 3  # customer segments only

    # A redelivered ingest after segmentation committed: no new segments, the same pending work.
    again = ingest.ingest(rec_id, settings)
    assert _counts(rec_id) == (6, 0)
    assert again.infer_batches == first.infer_batches

    batch = first.infer_batches[0]
    done = infer.infer(batch, settings)
    assert done.completed == [rec_id]
    assert _counts(rec_id) == (6, 3)
    assert infer.infer(batch, settings).completed == []  # re-run: nothing missing, nothing written
    assert _counts(rec_id) == (6, 3)
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.status == "done" and rec.completed_at is not None
    assert not (media_dir / str(tenant_id) / str(rec_id) / "audio16k.npy").exists()


def test_sweep_requeues_stuck_recording_and_never_fails_a_waiting_one(make_tenant, stereo_call) -> None:
    tenant_id, _ = make_tenant()
    rec_id = _recording(tenant_id, stereo_call, {})
    settings = get_settings()
    for _ in range(settings.max_attempts + 2):
        _age(rec_id, settings.stuck_after_s + 5)
        assert rec_id in sweep.sweep(settings).ingest
        with transaction() as s:
            rec = s.get(Recording, rec_id)
            # Waiting in a queue is no fault: still received, no attempt spent.
            assert rec is not None and rec.status == "received" and rec.attempts == 0
    # A recording that moved recently is left alone: at most one re-enqueue per stuck_after_s.
    assert rec_id not in sweep.sweep(settings).ingest


def test_ingest_gives_up_after_max_started_attempts(make_tenant, stereo_call) -> None:
    """A file whose decoding keeps killing its worker comes back by reject_on_worker_lost; each
    start is counted and the recording fails with a reason instead of looping forever."""
    tenant_id, _ = make_tenant()
    rec_id = _recording(tenant_id, stereo_call, {"0": "customer", "1": "agent"})
    settings = get_settings()
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None
        rec.attempts = settings.max_attempts
    followups = ingest.ingest(rec_id, settings)
    assert followups.failed == [rec_id] and not followups.infer_batches
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.status == "failed"
        assert f"started {settings.max_attempts} times" in (rec.error or "")
    assert _counts(rec_id) == (0, 0)


def test_unlabelled_stereo_call_analyzes_no_channel(make_tenant, stereo_call) -> None:
    """Without channel_roles one channel is probably the agent: nothing is inferred, and each
    segment says how to get the customer analyzed."""
    tenant_id, _ = make_tenant(["customer"])
    rec_id = _recording(tenant_id, stereo_call, {})
    followups = ingest.ingest(rec_id, get_settings())
    assert followups.infer_batches == [] and followups.completed == [rec_id]
    with transaction() as s:
        segs = s.scalars(select(Segment).where(Segment.recording_id == rec_id)).all()
        assert len(segs) == 6 and {seg.role for seg in segs} == {"unknown"}
        assert all(not seg.analyzed and "channel_roles" in (seg.skip_reason or "") for seg in segs)


def _age(rec_id: uuid.UUID, seconds: float) -> None:
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None
        rec.updated_at = utcnow() - timedelta(seconds=seconds)


def test_media_lost_after_acceptance_fails_with_reason(make_tenant, tmp_path) -> None:
    tenant_id, _ = make_tenant()
    rec_id = _recording(tenant_id, tmp_path / "gone.wav", {})
    ingest.ingest(rec_id, get_settings())
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.status == "failed"
        assert rec.error == "the media file is missing from storage"


def _recording(tenant_id: uuid.UUID, media: Path, roles: dict[str, str]) -> uuid.UUID:
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename=media.name, media_uri=str(media), channel_roles=roles)
        s.add(rec)
        s.flush()
        return rec.id


def test_segment_that_keeps_killing_inference_is_given_up(make_tenant, stereo_call) -> None:
    """Each inference start is committed before the model runs; a segment whose run never finishes
    (the worker died: the message comes back) is marked unanalyzable after max_attempts, and the
    recording completes with the rest."""
    tenant_id, _ = make_tenant(["customer"])
    rec_id = _recording(tenant_id, stereo_call, {"0": "customer", "1": "agent"})
    settings = get_settings()
    batch = ingest.ingest(rec_id, settings).infer_batches[0]
    poisoned = batch[0]
    with transaction() as s:
        seg = s.get(Segment, poisoned)
        assert seg is not None
        seg.infer_attempts = settings.max_attempts  # as if it had crashed the worker that often
    followups = infer.infer(batch, settings)
    assert followups.completed == [rec_id]
    assert _counts(rec_id) == (6, 2)
    with transaction() as s:
        seg = s.get(Segment, poisoned)
        assert seg is not None and not seg.analyzed and "started" in (seg.skip_reason or "")
        others = s.scalars(select(Segment).where(Segment.id.in_(batch[1:]))).all()
        assert all(o.infer_attempts == 1 for o in others)


def test_sweep_publishes_a_lost_completion_event_once(make_tenant, stereo_call) -> None:
    """Outbox: a done recording whose recording.completed was never published (its message was
    lost after the final commit) is handed to the final rule pass by the sweep, then no more."""
    from worker.stages import rules as rule_stages

    tenant_id, _ = make_tenant(["customer"])
    rec_id = _recording(tenant_id, stereo_call, {"0": "customer", "1": "agent"})
    settings = get_settings()
    for batch in ingest.ingest(rec_id, settings).infer_batches:
        infer.infer(batch, settings)
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.status == "done" and rec.final_event_at is None
        rec.completed_at = utcnow() - timedelta(seconds=settings.stuck_after_s + 5)
    assert rec_id in sweep.sweep(settings).completed
    rule_stages.evaluate_recording(rec_id, final=True)  # what the enqueued final pass runs
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.final_event_at is not None
    assert rec_id not in sweep.sweep(settings).completed
