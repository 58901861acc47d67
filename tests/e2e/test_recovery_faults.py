"""Fault injection with real worker processes: the broker (a redis-server of this test's own, on
another port, so the machine's shared Redis is never touched) goes down and comes back empty, and
a whole worker is killed with -9 mid-task; and Postgres drops every connection of this test's
database for seconds while calls are in flight (an immediate restart, as its clients see it). Each
call must end final, soon after the service is
back, with its work done once (every segment predicted once). Timings are printed, not asserted
(docs/BENCHMARKS.md, "Recovery")."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import func, select, update

from db.models import Prediction, Recording, Segment, utcnow
from db.session import transaction
from tests.broker_support import own_broker
from tests.support import running_worker
from worker.jobs import names, outbox
from worker.jobs.reconnect import EPOCH_KEY

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")

# Short leases so a kill is noticed in seconds; the mechanism is the same as production's 60 s.
# CALLPULSE_FAULTS_PRODUCTION_DEFAULTS=1 runs it with the shipped settings instead (the figures in
# docs/BENCHMARKS.md, "Recovery").
FAST = {} if os.environ.get("CALLPULSE_FAULTS_PRODUCTION_DEFAULTS") == "1" else {
    "CALLPULSE_LEASE_TTL_S": "4", "CALLPULSE_LEASE_HEARTBEAT_S": "1", "CALLPULSE_SWEEP_INTERVAL_S": "3"}


@pytest.fixture(autouse=True)
def _earlier_tests_rows_are_final() -> None:
    # A broker that lost its queues re-drives every unfinished call in the database: calls other
    # test modules left unfinished on purpose would only cost this test's worker time.
    with transaction() as s:
        s.execute(update(Recording).where(Recording.status.not_in(["done", "failed"]))
                  .values(status="failed", error="left by an earlier test", final_event_at=utcnow()))


def _recording(tenant_id: uuid.UUID, media: Path) -> uuid.UUID:
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename=media.name, media_uri=str(media),
                        channel_roles={"0": "customer", "1": "agent"})
        s.add(rec)
        s.flush()
        return rec.id


def _wait_final(rec_ids: list[uuid.UUID], timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with transaction() as s:
            final = s.scalar(select(func.count()).select_from(Recording).where(
                Recording.id.in_(rec_ids), Recording.status.in_(["done", "failed"])))
        if final == len(rec_ids):
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"not final {timeout_s} s after the service was back")


def _assert_done_once(rec_ids: list[uuid.UUID]) -> None:
    with transaction() as s:
        statuses = set(s.scalars(select(Recording.status).where(Recording.id.in_(rec_ids))))
        assert statuses == {"done"}, statuses
        per_segment = s.execute(
            select(Segment.id, func.count(Prediction.id))
            .join(Prediction, Prediction.segment_id == Segment.id, isouter=True)
            .where(Segment.recording_id.in_(rec_ids), Segment.analyzed.is_(True)).group_by(Segment.id)).all()
    assert per_segment and all(n == 1 for _, n in per_segment), per_segment


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """kill -9 of the whole worker: its main process first, so nothing hands a message back."""
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
    proc.send_signal(signal.SIGKILL)
    for pid in children:
        subprocess.run(["kill", "-9", pid], check=False)
    proc.wait()


def test_calls_survive_a_broker_that_comes_back_empty_and_a_worker_killed_mid_task(
        make_tenant, stereo_call: Path) -> None:
    tenant_id, _ = make_tenant(["customer"])
    with own_broker() as broker:
        app = Celery("faults", broker=broker.url)
        env = {**FAST, "CALLPULSE_BROKER_URL": broker.url}
        # 1. An upload while the broker is down: its message waits in the outbox.
        uploaded = _recording(tenant_id, stereo_call)
        assert outbox.send(names.INGEST.name, [str(uploaded)], app=app) is False
        broker.start()
        import redis

        redis.Redis.from_url(broker.url).set(EPOCH_KEY, "running")  # a broker that kept its data
        with running_worker("faults", args=("--concurrency", "1", "--beat"), env=env, ping_app=app) as worker:
            took = _wait_final([uploaded], 180)
            print(f"\nupload during a broker outage: final {took:.1f} s after the worker connected")
            _assert_done_once([uploaded])

            # 2. The broker restarts without persistence while calls wait in it.
            lost = [_recording(tenant_id, stereo_call) for _ in range(2)]
            broker.kill()
            broker.start()  # empty: the calls' messages (never sent here) are what it lost
            took = _wait_final(lost, 180)
            print(f"broker restarted empty: 2 calls final {took:.1f} s after it was back")
            _assert_done_once(lost)

            # 3. kill -9 of the whole worker mid-ingest: its message stays unacked in Redis for an
            # hour, and only the lease running out tells the sweep.
            killed = _recording(tenant_id, stereo_call)
            # This client has no routes of its own: name the queue the worker consumes.
            app.send_task(names.INGEST.name, args=[str(killed)], queue=names.INGEST.queue)
            deadline = time.monotonic() + 60
            while True:
                with transaction() as s:
                    if s.scalar(select(Recording.status).where(Recording.id == killed)) != "received":
                        break
                assert time.monotonic() < deadline, "the worker never started the call"
                time.sleep(0.1)
            _kill_tree(worker)
        with running_worker("faults", args=("--concurrency", "1", "--beat"), env=env, ping_app=app):
            took = _wait_final([killed], 180)
            print(f"whole worker killed mid-task: final {took:.1f} s after a new worker answered")
            _assert_done_once([killed])


def _drop_every_connection(seconds: float) -> int:
    """What an immediate Postgres restart looks like to its clients, for this test's database only
    (the server is shared): every other session is terminated, again and again, for ``seconds``."""
    from sqlalchemy import create_engine, text

    from tests.conftest import PG_ADMIN_URL, TEST_DB

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    dropped = 0
    deadline = time.monotonic() + seconds
    try:
        with admin.connect() as conn:
            while time.monotonic() < deadline:
                dropped += len(conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": TEST_DB}).all())
                time.sleep(0.3)
    finally:
        admin.dispose()
    return dropped


def test_calls_survive_postgres_dropping_every_connection_mid_task(make_tenant, stereo_call: Path) -> None:
    tenant_id, _ = make_tenant(["customer"])
    with own_broker() as broker:
        broker.start()
        import redis

        redis.Redis.from_url(broker.url).set(EPOCH_KEY, "running")
        app = Celery("faults", broker=broker.url)
        env = {**FAST, "CALLPULSE_BROKER_URL": broker.url}
        with running_worker("faults", args=("--concurrency", "1", "--beat"), env=env, ping_app=app):
            calls = [_recording(tenant_id, stereo_call) for _ in range(3)]
            for rec_id in calls:
                app.send_task(names.INGEST.name, args=[str(rec_id)], queue=names.INGEST.queue)
            deadline = time.monotonic() + 60
            while True:
                with transaction() as s:
                    started = s.scalar(select(func.count()).select_from(Recording).where(
                        Recording.id.in_(calls), Recording.status != "received"))
                if started:
                    break
                assert time.monotonic() < deadline, "the worker never started a call"
                time.sleep(0.1)
            dropped = _drop_every_connection(8.0)
            took = _wait_final(calls, 180)
            print(f"\npostgres dropped every connection for 8 s ({dropped} sessions) mid-task: "
                  f"3 calls final {took:.1f} s after it stopped")
            _assert_done_once(calls)
