"""Task time limits with a real worker: a task past its soft limit is stopped and records a failure
with the reason (here: the recording fails, naming the setting), and the same worker process goes on
with the next task instead of hanging."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from db.models import Recording
from db.session import transaction
from tests.broker_support import Broker, own_broker
from tests.support import running_worker
from worker.jobs import names


@pytest.fixture(scope="module")
def long_call(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twenty minutes of stereo audio: far more voice-activity work than one second allows."""
    path = tmp_path_factory.mktemp("limits") / "long_call.ogg"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anoisesrc=d=1200:a=0.2:c=pink",
                    "-f", "lavfi", "-i", "sine=f=180:d=1200", "-filter_complex", "amerge=inputs=2",
                    "-ac", "2", "-ar", "16000", "-c:a", "libopus", "-b:a", "16k", str(path)], check=True)
    return path


def _recording(tenant_id: uuid.UUID, media: Path) -> uuid.UUID:
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename=media.name, media_uri=str(media),
                        channel_roles={"0": "customer", "1": "agent"})
        s.add(rec)
        s.flush()
        return rec.id


def _wait_final(rec_id: uuid.UUID, timeout_s: float) -> Recording:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with transaction() as s:
            rec = s.get(Recording, rec_id)
            assert rec is not None
            if rec.status in ("done", "failed"):
                s.expunge(rec)
                return rec
        time.sleep(0.5)
    raise AssertionError(f"recording {rec_id} not final after {timeout_s} s")


@contextmanager
def _limited_worker(own: Broker) -> Iterator[Callable[[str, list[Any]], object]]:
    """An ingest worker with a 1 s limit on its own broker; yields how to send it a task."""
    own.start()
    sender = Celery("limits", broker=own.url)
    env = {"CALLPULSE_INGEST_TIME_LIMIT_S": "1", "CALLPULSE_BROKER_URL": own.url}
    with running_worker("limits", args=("--queues", "ingest", "--concurrency", "1"), env=env,
                        ping_app=sender):
        yield lambda name, args: sender.send_task(name, args=args, queue=names.INGEST.queue)


def test_ingest_past_its_time_limit_fails_with_the_reason(broker: str, make_tenant, long_call: Path,
                                                          tmp_path: Path) -> None:
    tenant_id, _ = make_tenant(["customer"])
    slow = _recording(tenant_id, long_call)
    missing = _recording(tenant_id, tmp_path / "gone.wav")
    # A broker of its own: in the full suite, messages and workers of earlier tests share the
    # suite's queues, and any other consumer of `ingest` would run this call without the limit.
    with own_broker() as own, _limited_worker(own) as send:
        started = time.monotonic()
        send(names.INGEST.name, [str(slow)])
        rec = _wait_final(slow, 120)
        took = time.monotonic() - started
        assert rec.status == "failed"
        assert rec.error == ("ingest took longer than its time limit of 1 s (CALLPULSE_INGEST_TIME_LIMIT_S) "
                             "and was stopped")
        # Stopped at the soft limit, not after the hard one (30 s later) killed the process.
        assert took < 30, took
        # The same single pool process takes the next task.
        send(names.INGEST.name, [str(missing)])
        assert _wait_final(missing, 60).error == "the media file is missing from storage"
