"""kill -9 of a real `callpulse api` in the middle of an upload or a live call, at the points where a
crash used to leave something behind:

- after the file is on disk, before the row is committed: a media folder no row names, which the
  media sweep removes (nothing else would: the request's cleanup died with it);
- after the commit, before the ingest message is published: a `received` row nothing would send on
  until the slow backstop (10 minutes). The message is staged in the outbox in the same transaction
  as the row, so the next sweep sends it;
- mid-way through a live call: the API process holds a lease on the call while it streams; once
  that runs out (CALLPULSE_LEASE_TTL_S, a minute) the sweep finishes the call from the audio on
  disk, where it used to wait for the 10-minute backstop.

The API is stopped at each point without timing tricks: a lock on the `recording` table holds the
insert, and a broker that accepts connections but never answers holds the publish."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
from celery import Celery
from sqlalchemy import select, text

from callpulse.settings import Settings
from db.models import Recording
from db.recovery_models import OutboxMessage
from db.session import transaction
from tests.conftest import TEST_BROKER
from tests.live_support import free_port
from tests.support import ROOT
from worker.jobs import names, outbox
from worker.stages.media_sweep import sweep_media

GRACE_S = 0.5


@contextmanager
def api_process(tmp_path: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "callpulse.cli", "api", "--port", str(port)],
                                env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _upload_in_background(base: str, key: str, media: Path) -> threading.Thread:
    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server dies under it
            httpx.post(f"{base}/v1/recordings", headers={"X-API-Key": key}, timeout=60,
                       files={"file": ("call.wav", media.read_bytes(), "audio/wav")})

    client = threading.Thread(target=upload, daemon=True)
    client.start()
    return client


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@contextmanager
def _recording_table_locked() -> Iterator[None]:
    """Writes to `recording` wait until the block ends: an upload stops after its file is on disk
    and before its row exists."""
    with transaction() as s:
        s.execute(text("LOCK TABLE recording IN EXCLUSIVE MODE"))
        yield


@contextmanager
def _silent_broker() -> Iterator[str]:
    """A TCP server that takes connections and never answers: a publish to it hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    try:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    finally:
        server.close()


def test_killed_before_the_commit_leaves_a_folder_the_media_sweep_removes(
        make_tenant, stereo_call: Path, tmp_path: Path) -> None:
    _, key = make_tenant()
    media = tmp_path / "media"
    with api_process(tmp_path, CALLPULSE_MEDIA_DIR=str(media)) as (api, base):
        with _recording_table_locked():
            client = _upload_in_background(base, key, stereo_call)
            written = stereo_call.stat().st_size
            deadline = time.monotonic() + 60
            while not [p for p in media.glob("*/*/original.wav") if p.stat().st_size == written]:
                assert time.monotonic() < deadline, "the upload never reached the disk"
                time.sleep(0.05)
            time.sleep(0.5)  # the probe runs, then the insert waits for the lock
            _kill(api)
        client.join(timeout=10)

    [folder] = [p.parent for p in media.glob("*/*/original.wav")]
    with transaction() as s:
        assert s.scalar(select(Recording.id).where(Recording.id == uuid.UUID(folder.name))) is None
    time.sleep(GRACE_S + 0.1)
    counts = sweep_media(Settings(media_dir=media, media_grace_s=GRACE_S))
    assert counts.orphans_removed == 1 and not folder.exists()


def test_killed_after_the_commit_leaves_the_ingest_in_the_outbox(
        make_tenant, stereo_call: Path, tmp_path: Path) -> None:
    tenant_id, key = make_tenant()
    with _silent_broker() as broker, api_process(
            tmp_path, CALLPULSE_MEDIA_DIR=str(tmp_path / "media"), CALLPULSE_BROKER_URL=broker,
            CALLPULSE_RATE_LIMIT_URL=TEST_BROKER) as (api, base):
        client = _upload_in_background(base, key, stereo_call)
        deadline = time.monotonic() + 60
        while True:
            with transaction() as s:
                rec_id = s.scalar(select(Recording.id).where(Recording.tenant_id == tenant_id))
            if rec_id is not None:
                break
            assert time.monotonic() < deadline, "the upload was never committed"
            time.sleep(0.05)
        _kill(api)  # committed; its publish hangs on the silent broker
        client.join(timeout=10)

    with transaction() as s:
        assert s.scalar(select(Recording.status).where(Recording.id == rec_id)) == "received"
        [staged] = [m for m in s.scalars(select(OutboxMessage).where(OutboxMessage.task == names.INGEST.name))
                    if m.args == [str(rec_id)]]
    # What the next sweep does first: the outbox goes to the broker, and the copy is gone once sent.
    assert outbox.drain(app=Celery("sink", broker="memory://")) >= 1
    with transaction() as s:
        assert s.get(OutboxMessage, staged.id) is None


def test_killed_mid_live_call_is_finished_once_its_lease_runs_out(
        make_tenant, tmp_path: Path) -> None:
    import json

    import numpy as np
    from websockets.sync.client import connect

    from callpulse.settings import get_settings
    from db.recovery_models import WorkLease
    from tests.live_support import pcm16
    from tests.support import EXAMPLE
    from worker.stages.sweep import sweep

    _, key = make_tenant(["customer"])
    audio = pcm16(EXAMPLE)[: 5 * 16000]
    with api_process(tmp_path, CALLPULSE_LEASE_TTL_S="2", CALLPULSE_LEASE_HEARTBEAT_S="0.5") as (api, base):
        ws = connect(f"{base.replace('http://', 'ws://')}/v1/live", additional_headers={"X-API-Key": key})
        ws.send(json.dumps({"event": "start", "encoding": "pcm_s16le", "sample_rate": 16000, "channels": 2,
                            "channel_roles": {"0": "agent", "1": "customer"}}))
        rec_id = uuid.UUID(json.loads(ws.recv(timeout=30))["recording_id"])
        for start in range(0, len(audio), 1600):
            ws.send(np.ascontiguousarray(audio[start:start + 1600]).astype("<i2").tobytes())
        settings = get_settings()
        deadline = time.monotonic() + 30
        while True:  # the audio reached the disk, and the lease has been renewed at least once
            with transaction() as s:
                rec = s.get(Recording, rec_id)
                leases = list(s.scalars(select(WorkLease).where(WorkLease.recording_id == rec_id)))
            assert rec is not None and rec.status == "live"
            samples = Path(rec.media_uri).parent / "live.s16"
            renewed = [lease.stage for lease in leases] == ["live"] and (
                leases[0].expires_at - leases[0].claimed_at > timedelta(seconds=2.2))
            if renewed and samples.exists() and samples.stat().st_size > 0:
                break
            assert time.monotonic() < deadline, leases
            time.sleep(0.2)
        sweep(settings)  # the API holds the call: left alone
        with transaction() as s:
            assert s.scalar(select(Recording.status).where(Recording.id == rec_id)) == "live"
        _kill(api)
        with contextlib.suppress(Exception):
            ws.close()

    time.sleep(2.5)  # the lease said 2 s; nothing renews it now
    sweep(settings)
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.status in ("analyzing", "done") and rec.disconnected, rec.status
