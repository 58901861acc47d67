"""Shared test helpers: a real `callpulse worker` process, started and stopped the same way by
every module that needs one."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
# The shipped example call: 36 s stereo of real read speech, agent on channel 0, customer on 1.
EXAMPLE = ROOT / "callpulse" / "examples" / "demo_call.ogg"
FACE_SAMPLE = ROOT / "tests" / "data" / "face_sample.jpg"  # public-domain photo (tests/data/README)


def _answers(app: Celery) -> bool:
    """A ping over a connection of its own: a pooled one may still point at a broker that has
    restarted since (the fault tests restart theirs), and a failed ping only means "not yet"."""
    with app.connection_for_write() as conn:
        try:
            return bool(app.control.ping(timeout=1.0, connection=conn))
        except conn.connection_errors:
            return False


@contextmanager
def running_worker(
    name: str,
    args: tuple[str, ...] = ("--concurrency", "1"),
    env: Mapping[str, str] | None = None,
    ping_app: Celery | None = None,
    timeout_s: float = 120.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """`callpulse worker ARGS` in a subprocess, yielded once it answers a ping on ``ping_app``'s
    broker (default: the suite's). Its log goes to a file: nobody reads a pipe while it runs, and
    a full pipe would block the worker."""
    if ping_app is None:
        from worker.jobs.app import app as suite_app

        ping_app = suite_app
    log_path = Path(tempfile.mkdtemp(prefix=f"callpulse-{name}-worker-")) / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "callpulse.cli", "worker", *args, "--loglevel", "WARNING",
             "--name", f"{name}-{uuid.uuid4().hex[:6]}@%h"],
            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, **(env or {})}, cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(ping_app):
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited: {log_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker did not answer a ping within {timeout_s:.0f} s")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
