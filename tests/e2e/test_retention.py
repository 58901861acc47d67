"""Per-tenant retention: expired calls are deleted as DELETE /v1/recordings/{id} deletes them,
expired media loses only its files (the analysis stays); beat runs it in a real worker."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import REGISTRY
from sqlalchemy import func, select, update

from callpulse.settings import get_settings
from db.models import Prediction, Recording, Segment, Tenant
from db.session import transaction
from tests.dashboard_fixtures import login_form_token
from tests.rules_fixtures import allow_loopback_targets, auth, client, seed_recording  # noqa: F401
from tests.support import running_worker
from worker.pipeline.media import audio_store
from worker.stages.retention import apply_retention

NOW = datetime.now(UTC)


def _call(tenant_id: uuid.UUID, age_days: float, status: str = "done") -> tuple[uuid.UUID, Path]:
    """A stored call of that age with segments, predictions and files in the media directory."""
    rec_id, _ = seed_recording(tenant_id, [("customer", "angry", 0.8, -0.6), ("customer", "happy", 0.7, 0.5)],
                               status=status)
    media_root = get_settings().resolved_media_dir
    media = audio_store.media_path(media_root, tenant_id, rec_id, "wav")
    media.parent.mkdir(parents=True, exist_ok=True)
    media.write_bytes(b"RIFF....WAVE")
    audio_store.cache_path(media_root, tenant_id, rec_id).write_bytes(b"\x93NUMPY")
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == rec_id)
                  .values(created_at=NOW - timedelta(days=age_days), media_uri=str(media)))
    return rec_id, media.parent


def _tenant(media_days: int | None, data_days: int | None) -> uuid.UUID:
    from db.queries.tenants import create_tenant

    with transaction() as s:
        tenant = create_tenant(s, f"ret-{uuid.uuid4().hex[:8]}")
        tenant.media_retention_days, tenant.data_retention_days = media_days, data_days
        return tenant.id


def _segments(rec_id: uuid.UUID) -> int:
    with transaction() as s:
        return s.scalar(select(func.count()).select_from(Segment).where(Segment.recording_id == rec_id)) or 0


def test_expired_data_and_media_go_and_nothing_else(client) -> None:
    tenant_id = _tenant(media_days=10, data_days=30)
    keeper_id = _tenant(media_days=None, data_days=None)
    old, old_dir = _call(tenant_id, 40)
    aged, aged_dir = _call(tenant_id, 20)
    running, running_dir = _call(tenant_id, 20, status="analyzing")
    fresh, fresh_dir = _call(tenant_id, 1)
    other, other_dir = _call(keeper_id, 400)
    with transaction() as s:
        old_segments = list(s.scalars(select(Segment.id).where(Segment.recording_id == old)))

    def deleted(kind: str) -> float:
        return REGISTRY.get_sample_value("callpulse_retention_deleted_total", {"kind": kind}) or 0.0

    before = deleted("recording"), deleted("media")
    counts = apply_retention(get_settings(), NOW)
    assert (counts.recordings_deleted, counts.media_deleted) == (1, 1)
    assert (deleted("recording"), deleted("media")) == (before[0] + 1, before[1] + 1)  # and in metrics

    with transaction() as s:
        assert s.get(Recording, old) is None
        # Cascaded like DELETE /v1/recordings/{id}: no segment or prediction of it is left.
        assert not s.scalar(select(func.count()).select_from(Prediction)
                            .where(Prediction.segment_id.in_(old_segments)))
        aged_row = s.get(Recording, aged)
        assert aged_row is not None and aged_row.media_deleted_at is not None
        assert s.get(Recording, running).media_deleted_at is None  # type: ignore[union-attr]
        assert s.get(Recording, other) is not None and s.get(Recording, fresh) is not None
    assert not old_dir.exists() and not aged_dir.exists()
    assert _segments(aged) == 2  # the analysis stays
    assert running_dir.exists() and fresh_dir.exists() and other_dir.exists()

    again = apply_retention(get_settings(), NOW)
    assert (again.recordings_deleted, again.media_deleted) == (0, 0)


def test_a_call_without_media_says_so(client) -> None:
    from db.queries.tenants import create_api_key

    tenant_id = _tenant(media_days=5, data_days=None)
    with transaction() as s:
        _, key = create_api_key(s, tenant_id, "ops")
    rec_id, _ = _call(tenant_id, 6)
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == rec_id).values(final_event_at=NOW))
    apply_retention(get_settings(), NOW)

    detail = client.get(f"/v1/recordings/{rec_id}", headers=auth(key)).json()
    assert detail["media_deleted_at"] is not None and detail["status"] == "done"
    assert len(client.get(f"/v1/recordings/{rec_id}/timeline", headers=auth(key)).json()["segments"]) == 2
    refused = client.post(f"/v1/recordings/{rec_id}/rescore", headers=auth(key))
    assert refused.status_code == 409 and "retention" in refused.json()["detail"]
    login = client.post("/dashboard/login", data={"api_key": key, "csrf_token": login_form_token(client)})
    assert login.status_code in (200, 303), login.text
    media = client.get(f"/dashboard/recordings/{rec_id}/media")
    assert media.status_code == 410 and "retention" in media.json()["detail"]


def test_beat_runs_retention_in_a_worker(tmp_path: Path, broker: str) -> None:
    tenant_id = _tenant(media_days=None, data_days=7)
    old, old_dir = _call(tenant_id, 8)
    env = {"CALLPULSE_RETENTION_INTERVAL_S": "1", "CALLPULSE_DATA_DIR": str(tmp_path),
           "CALLPULSE_SWEEP_INTERVAL_S": "3600"}
    with running_worker("retention", ("--queues", "ingest", "--pool", "solo", "--beat"), env=env):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with transaction() as s:
                if s.get(Recording, old) is None:
                    break
            time.sleep(0.5)
    with transaction() as s:
        assert s.get(Recording, old) is None, "beat did not delete the expired call within 60 s"
        assert s.get(Tenant, tenant_id) is not None
    assert not old_dir.exists()
