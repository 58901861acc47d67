"""Shared fixtures of the rules and webhook tests: a real HTTP receiver on loopback that verifies
Standard Webhooks signatures, a real Celery worker, settings that allow loopback targets, and
helpers that store recordings with segments and predictions directly."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from db.models import Prediction, Recording, Segment
from db.session import transaction
from tests.support import running_worker
from worker.notify import webhooks as notify

# Loopback receivers need the SSRF guard relaxed; retries are shortened so give-up takes seconds.
WORKER_ENV = {
    "CALLPULSE_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
    "CALLPULSE_WEBHOOK_BACKOFF_BASE_S": "0.2",
    "CALLPULSE_WEBHOOK_BACKOFF_CAP_S": "1",
    "CALLPULSE_WEBHOOK_MAX_ATTEMPTS": "3",
    "CALLPULSE_WEBHOOK_TIMEOUT_S": "5",
}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str
    valid: bool
    at: float


@dataclass
class Receiver:
    """Answers each path with its scripted status codes (then 200), recording every request."""

    base_url: str
    secrets: dict[str, str] = field(default_factory=dict)
    script: dict[str, list[int]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def endpoint(self, fail_first: int = 0, status: int = 500) -> tuple[str, str]:
        """A fresh path; returns (url, path). Call ``sign_with`` once the secret is known."""
        path = f"/hook/{uuid.uuid4().hex}"
        self.script[path] = [status] * fail_first
        return self.base_url + path, path

    def sign_with(self, path: str, secret: str) -> None:
        self.secrets[path] = secret

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait(self, path: str, predicate: Callable[[list[Received]], bool], timeout: float = 30.0
             ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if predicate(got):
                return got
            time.sleep(0.05)
        seen = [(r.headers.get("webhook-id"), r.body[:80]) for r in self.at(path)]
        raise AssertionError(f"receiver {path} got {seen}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length).decode("utf-8")
            recv = state["r"]
            headers = {k.lower(): v for k, v in self.headers.items()}
            secret = recv.secrets.get(self.path, "")
            valid = bool(secret) and notify.verify(secret, headers, body)
            with recv.lock:
                recv.requests.append(Received(self.path, headers, body, valid, time.monotonic()))
                plan = recv.script.get(self.path, [])
                code = plan.pop(0) if plan else 200
            self.send_response(code)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["r"] = Receiver(base_url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["r"]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def allow_loopback_targets() -> Iterator[None]:
    """In-process settings (API, stages called directly) with the worker's webhook settings."""
    from callpulse.settings import get_settings

    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    get_settings.cache_clear()
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture
def client(allow_loopback_targets: None) -> Iterator[TestClient]:
    """The API in-process, with loopback webhook targets allowed for the test receiver."""
    from api.main import create_app

    with TestClient(create_app()) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


@pytest.fixture(scope="module")
def rules_worker(broker: str, allow_loopback_targets: None) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker on every queue. The threads pool loads the emotion model lazily (no per-process
    warm-up), so a module that never ingests never pays for it."""
    from worker.jobs.app import app

    app.control.purge()  # messages left by modules without a worker must not run against this one
    with running_worker("rules", ("--pool", "threads", "--concurrency", "4"), env=WORKER_ENV) as proc:
        yield proc


# (role, label, probability of the label, valence) per segment, 5 s apart, 4.5 s long.
SegmentSpec = tuple[str, str, float, float]


def seed_recording(tenant_id: uuid.UUID, specs: list[SegmentSpec], predicted: int | None = None,
                   status: str = "analyzing") -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A recording whose first ``predicted`` analyzed segments have predictions (default: all)."""
    predicted = len(specs) if predicted is None else predicted
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename="seeded.wav", media_uri="/nonexistent/seeded.wav",
                        status=status, external_id=f"seed-{uuid.uuid4().hex[:8]}",
                        duration_s=5.0 * len(specs))
        s.add(rec)
        s.flush()
        ids = []
        for i, (role, label, prob, valence) in enumerate(specs):
            seg = Segment(recording_id=rec.id, index=i, channel=0, speaker=role, role=role,
                          start_s=5.0 * i, end_s=5.0 * i + 4.5)
            s.add(seg)
            s.flush()
            ids.append(seg.id)
            if i < predicted:
                add_prediction(s, seg.id, label, prob, valence)
        return rec.id, ids


def add_prediction(s: Any, segment_id: uuid.UUID, label: str, prob: float, valence: float) -> None:
    rest = (1.0 - prob) / 6
    scores = {name: rest for name in ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")}
    scores[label] = prob
    s.add(Prediction(segment_id=segment_id, model_name="test", model_version="1", label=label,
                     raw_label=label, scores=scores, valence=valence, arousal=0.6, confidence=prob,
                     reasoning=[], reasoning_text=""))




