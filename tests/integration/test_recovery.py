"""Recovery as a mechanism: leases tell a dead worker's work from queued work, the outbox keeps
messages the broker could not take, and a retry that cannot be published is kept, not dropped.
Real Postgres and Redis; the broker outage is a Celery app pointed at a port nothing listens on."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.exceptions import Ignore
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from callpulse.settings import get_settings
from db.models import Recording, utcnow
from db.queries import recovery as recovery_q
from db.recovery_models import OutboxMessage, WorkLease
from db.session import transaction
from tests.conftest import TEST_BROKER
from worker.jobs import lease, names, outbox
from worker.jobs.retry import retry_unless_exhausted
from worker.stages import sweep

DEAD_BROKER = "redis://127.0.0.1:1/0"


def _recording(tenant_id: uuid.UUID, media: Path, status: str = "received") -> uuid.UUID:
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename=media.name, media_uri=str(media), status=status)
        s.add(rec)
        s.flush()
        return rec.id


def _lease(rec_id: uuid.UUID, stage: str, expires_in_s: float, node: str = "w1@test") -> None:
    with transaction() as s:
        s.add(WorkLease(recording_id=rec_id, stage=stage, node=node, boot="b1", claimed_at=utcnow(),
                        expires_at=utcnow() + timedelta(seconds=expires_in_s)))


def _leases(rec_id: uuid.UUID) -> list[WorkLease]:
    with transaction() as s:
        return list(s.scalars(select(WorkLease).where(WorkLease.recording_id == rec_id)))


def test_sweep_redrives_exactly_the_work_whose_worker_died(make_tenant, stereo_call: Path) -> None:
    tenant_id, _ = make_tenant()
    queued = _recording(tenant_id, stereo_call)  # waiting in a queue: no lease
    dead = _recording(tenant_id, stereo_call, "decoding")  # its worker was killed with -9
    running = _recording(tenant_id, stereo_call, "decoding")  # its worker is alive and beating
    _lease(dead, "ingest", -1)
    _lease(running, "ingest", 60)
    settings = get_settings()
    followups = sweep.sweep(settings)
    assert dead in followups.ingest
    assert queued not in followups.ingest and running not in followups.ingest
    assert _leases(dead) == []  # taken by this sweep: the next one does not re-drive it again
    assert dead not in sweep.sweep(settings).ingest
    assert len(_leases(running)) == 1
    # Two workers on one recording (two infer batches): one dying leaves it to the other.
    _lease(running, "infer", -1, node="w2@test")
    assert running not in sweep.sweep(settings).ingest


def test_a_final_pass_lost_with_its_worker_is_published_by_the_next_sweep(make_tenant,
                                                                         stereo_call: Path) -> None:
    tenant_id, _ = make_tenant()
    rec_id = _recording(tenant_id, stereo_call, "done")
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == rec_id).values(completed_at=utcnow()))
    assert rec_id not in sweep.sweep(get_settings()).completed  # fresh: its final pass may be queued
    _lease(rec_id, "rules", -1)
    assert rec_id in sweep.sweep(get_settings()).completed


def test_after_the_broker_lost_its_queues_every_unheld_unfinished_call_is_redriven(
        make_tenant, stereo_call: Path) -> None:
    tenant_id, _ = make_tenant()
    queued = _recording(tenant_id, stereo_call)
    held = _recording(tenant_id, stereo_call, "decoding")
    _lease(held, "ingest", 60)
    settings = get_settings()
    assert queued not in sweep.sweep(settings).ingest
    followups = sweep.sweep(settings, broker_lost=True)
    assert queued in followups.ingest and held not in followups.ingest


def test_broker_loss_is_noticed_once_per_restart(broker: str) -> None:
    from worker.jobs.reconnect import EPOCH_KEY, broker_lost_queues

    client = redis.Redis.from_url(broker)
    client.delete(EPOCH_KEY)  # what a restart without persistence leaves
    assert broker_lost_queues(broker) is True
    assert broker_lost_queues(broker) is False
    assert client.get(EPOCH_KEY) == lease.BOOT.encode()


def test_a_lease_lives_while_its_task_beats_and_ends_with_it(make_tenant, stereo_call: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "lease_ttl_s", 1.0)
    monkeypatch.setattr(settings, "lease_heartbeat_s", 0.2)
    tenant_id, _ = make_tenant()
    rec_id = _recording(tenant_id, stereo_call, "decoding")
    with lease.held("ingest", [rec_id], "w3@test"):
        time.sleep(2.5)  # well past the TTL: only the heartbeat keeps it
        [held] = _leases(rec_id)
        assert held.expires_at > utcnow() and held.node == "w3@test"
        assert rec_id not in sweep.sweep(settings).ingest
    assert _leases(rec_id) == []


def test_worker_restart_ends_its_previous_runs_leases(make_tenant, stereo_call: Path) -> None:
    tenant_id, _ = make_tenant()
    rec_id = _recording(tenant_id, stereo_call, "decoding")
    _lease(rec_id, "ingest", 60, node="w4@test")
    with transaction() as s:
        assert recovery_q.end_previous_incarnations(s, "w4@test", "new-boot") == 1
    assert rec_id in sweep.sweep(get_settings()).ingest


def _outbox(task: str) -> list[OutboxMessage]:
    with transaction() as s:
        return list(s.scalars(select(OutboxMessage).where(OutboxMessage.task == task)))


def test_outbox_keeps_what_the_broker_refused_and_sends_it_when_it_is_back(broker: str) -> None:
    down = Celery("down", broker=DEAD_BROKER)
    rec_id = str(uuid.uuid4())
    task = names.INGEST.name
    assert outbox.send(task, [rec_id], app=down) is False
    [kept] = [m for m in _outbox(task) if m.args == [rec_id]]
    assert "OperationalError" in (kept.error or "")
    # Still down: nothing is lost by trying.
    outbox.drain(app=down)
    assert [m.args for m in _outbox(task)].count([rec_id]) == 1

    from worker.jobs.app import app

    client = redis.Redis.from_url(broker)
    client.delete("ingest")
    assert outbox.drain() >= 1
    assert [m for m in _outbox(task) if m.args == [rec_id]] == []
    bodies = [m.decode() for m in client.lrange("ingest", 0, -1)]
    assert any(rec_id in body and task in body for body in bodies), bodies
    client.delete("ingest")
    assert app.conf.broker_url == TEST_BROKER


def test_a_retry_that_cannot_be_published_is_kept_not_rejected() -> None:
    down = Celery("down", broker=DEAD_BROKER)
    rec_id = str(uuid.uuid4())

    # Not shared: a shared task would be added to every app finalized later, the real one included,
    # in place of callpulse.ingest_recording with its time limits.
    @down.task(bind=True, name=names.INGEST.name, shared=False)
    def ingest_like(self: Any, recording_id: str) -> None:
        retry_unless_exhausted(self, OperationalError("SELECT 1", {}, Exception("db restarting")),
                               names.INGEST)

    ingest_like.push_request(id=str(uuid.uuid4()), args=[rec_id], kwargs={}, retries=0, is_eager=False,
                             called_directly=False, delivery_info={})
    try:
        with pytest.raises(Ignore):  # acknowledged quietly: the outbox carries the retry
            ingest_like.run(rec_id)
    finally:
        ingest_like.pop_request()
    [kept] = [m for m in _outbox(names.INGEST.name) if m.args == [rec_id]]
    assert kept.countdown_s is not None and kept.countdown_s > 0
    with transaction() as s:
        s.delete(s.get(OutboxMessage, kept.id))


def test_sweeps_stay_quiet_while_the_database_is_down(broker: str, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Beat sends a sweep every interval: with Postgres down that is one WARNING for the outage,
    not an ERROR with a traceback per tick, and one line once it is back."""
    from worker.jobs import reconnect
    from worker.jobs.notify import sweep_deliveries

    monkeypatch.setenv("CALLPULSE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/down")
    get_settings.cache_clear()
    caplog.set_level(logging.WARNING)
    try:
        for _ in range(3):
            reconnect.sweep_now()
            sweep_deliveries()  # the task's body, as beat's tick runs it
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    during = [r for r in caplog.records if r.name.startswith("worker.")]
    for what in ("sweep skipped", "webhook delivery sweep skipped"):
        assert [r.levelno for r in during if r.getMessage().startswith(what)] == [logging.WARNING], during
    assert all(r.levelno < logging.ERROR and r.exc_info is None for r in during), during
    caplog.clear()
    reconnect.sweep_now()
    sweep_deliveries()
    back = [r.getMessage() for r in caplog.records if r.name.startswith("worker.")]
    assert any(m.startswith("sweep ran again") for m in back), back
    assert any(m.startswith("webhook delivery sweep ran again") for m in back), back
