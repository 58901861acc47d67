"""Only the infer side knows the model. Ingest and the sweep judge nothing against a model version:
a stuck call goes to the infer queue (callpulse.resume_recording), where the worker that runs the
model decides with its own version. So in the GPU profile (CPU worker on `embedded`, GPU worker on
another backend) a sweep can never complete a call that was reopened for the GPU worker's model."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from callpulse.settings import get_settings
from db.models import Recording, RecordingStatus, utcnow
from db.session import transaction
from worker import runtime
from worker.stages import infer, ingest, sweep


@dataclass(frozen=True)
class ModelVersion:
    """What the infer stage reads of a model to decide what is missing: its name and version."""

    name: str
    version: str


def _status(rec_id: uuid.UUID) -> str:
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None
        return rec.status


def test_sweep_under_model_a_cannot_complete_a_call_reopened_for_model_b(make_tenant,
                                                                         stereo_call: Path) -> None:
    settings = get_settings()
    tenant_id, _ = make_tenant(["customer"])
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename=stereo_call.name, media_uri=str(stereo_call),
                        channel_roles={"0": "customer", "1": "agent"})
        s.add(rec)
        s.flush()
        rec_id = rec.id
    batches = ingest.ingest(rec_id, settings).infer_batches
    assert batches, "ingest hands every analyzable segment to inference, without a model"
    for batch in batches:
        infer.infer(batch, settings)  # model A: this process's embedded model
    assert _status(rec_id) == RecordingStatus.done.value
    model_a = runtime.emotion_model(settings)
    model_b = ModelVersion(model_a.name, f"{model_a.version}-b")

    # Reopened for model B (as a rescore on the GPU worker does), and its batches' messages lost.
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == rec_id).values(
            status=RecordingStatus.analyzing.value, final_event_at=None,
            updated_at=utcnow() - timedelta(seconds=settings.stuck_after_s + 60)))

    followups = sweep.sweep(settings)  # every one of A's predictions is there: the old sweep completed it
    assert rec_id in followups.resume
    assert rec_id not in followups.completed and not followups.infer_batches
    assert _status(rec_id) == RecordingStatus.analyzing.value

    # On the infer queue, the worker running B finds B's predictions missing and re-enqueues them.
    resumed = infer.resume(rec_id, settings, model_b)  # type: ignore[arg-type]
    assert sorted(i for b in resumed.infer_batches for i in b) == sorted(i for b in batches for i in b)
    assert not resumed.completed and _status(rec_id) == RecordingStatus.analyzing.value

    # A worker running A judges by A: nothing missing, the call is done.
    assert infer.resume(rec_id, settings, model_a).completed == [rec_id]
    assert _status(rec_id) == RecordingStatus.done.value
