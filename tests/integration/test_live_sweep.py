"""A live call whose API process died mid-stream (its lease ran out, or, without one, no heartbeat
for CALLPULSE_STUCK_AFTER_S) is finished by the sweep from what reached the disk: a WAV, status done,
`disconnected`; segments the process committed but never sent to inference are handed to the infer
queue at once. An infer worker that died on a live call's segment ends nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from callpulse.settings import get_settings
from db.models import Recording, utcnow
from db.session import transaction
from tests.live_support import pcm16
from tests.support import EXAMPLE
from worker.pipeline.media import decode, live_audio
from worker.stages import live as live_stage
from worker.stages.sweep import sweep


def test_sweep_finishes_a_live_call_whose_api_died(make_tenant) -> None:
    tenant_id, _ = make_tenant(["customer"])
    settings = get_settings()
    opened = live_stage.open_call(tenant_id, live_stage.LiveSpec(
        channels=2, channel_roles={"0": "agent", "1": "customer"}, external_id="orphan"), settings)
    ten_s = pcm16(EXAMPLE)[: 10 * 16000].astype("float32") / 32768.0
    writer = live_audio.LiveWriter(opened.folder, 2)
    writer.append([ten_s[:, 0], ten_s[:, 1]])  # the API died here: nothing closed, nothing finished

    assert opened.recording_id not in sweep(settings).completed  # heartbeat still fresh: left alone
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == opened.recording_id)
                  .values(updated_at=utcnow() - timedelta(seconds=2 * settings.stuck_after_s)))
    followups = sweep(settings)

    assert opened.recording_id in followups.completed
    with transaction() as s:
        rec = s.get(Recording, opened.recording_id)
        assert rec is not None and rec.status == "done" and rec.disconnected
        assert rec.duration_s == 10.0
        media = Path(rec.media_uri)
    info = decode.probe(media)  # an ordinary recording now: a WAV that decodes
    assert info.channels == 2 and abs(info.duration_s - 10.0) < 0.01
    assert not (opened.folder / live_audio.LIVE_NAME).exists()


def test_a_dead_api_lease_ends_the_call_and_its_unsent_segments_go_to_inference(make_tenant) -> None:
    from db.recovery_models import WorkLease

    tenant_id, _ = make_tenant(["customer"])
    settings = get_settings()
    opened = live_stage.open_call(tenant_id, live_stage.LiveSpec(
        channels=2, channel_roles={"0": "agent", "1": "customer"}), settings)
    ten_s = pcm16(EXAMPLE)[: 10 * 16000].astype("float32") / 32768.0
    live_audio.LiveWriter(opened.folder, 2).append([ten_s[:, 0], ten_s[:, 1]])
    # A customer turn committed; the process died before its infer message went out.
    [(_, analyzed)] = live_stage.add_segments(opened, [live_stage.NewSegment(1, 1.0, 4.0)])
    assert analyzed

    def lease(stage: str, expires_in_s: float) -> None:
        with transaction() as s:
            s.add(WorkLease(recording_id=opened.recording_id, stage=stage, node="x", boot="b",
                            claimed_at=utcnow(), expires_at=utcnow() + timedelta(seconds=expires_in_s)))

    lease("infer", -1.0)  # an infer worker died on one of its segments: the socket handler lives on
    lease("live", 60.0)
    sweep(settings)
    with transaction() as s:
        assert s.scalar(select(Recording.status).where(Recording.id == opened.recording_id)) == "live"
        s.execute(update(WorkLease).where(WorkLease.recording_id == opened.recording_id)
                  .values(expires_at=utcnow() - timedelta(seconds=1)))  # the API process died
    followups = sweep(settings)
    assert opened.recording_id in followups.resume
    with transaction() as s:
        rec = s.get(Recording, opened.recording_id)
        assert rec is not None and rec.status == "analyzing" and rec.disconnected
