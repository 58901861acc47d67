"""Shared by the dashboard's browser tests: headless Chromium (Playwright, the system's browser,
no download) against a real `callpulse api` subprocess and a real Celery worker; screenshots of a
page at 1280×800 and at tablet width go to test-artifacts/ (not committed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import running_worker

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("CALLPULSE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SEEK_TOLERANCE_S = 0.3

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the [dev] extra")
if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh (make system)")
    pytest.skip(f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(database: str) -> Iterator[str]:
    """`callpulse api` on a free loopback port, with the test environment (conftest's CALLPULSE_*)."""
    port = _free_port()
    env = {**os.environ, "CALLPULSE_SESSION_SECRET": uuid.uuid4().hex,
           "CALLPULSE_DASHBOARD_ALERT_POLL_S": "0.5"}
    proc = subprocess.Popen([sys.executable, "-m", "callpulse.cli", "api", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"api exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("api did not start within 60 s")
        time.sleep(0.2)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # an event stream still open keeps uvicorn waiting
        proc.kill()


@pytest.fixture(scope="module")
def celery_worker(broker: str, database: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker on every queue (ingest, infer, rules, notify), as `callpulse worker` runs."""
    with running_worker("dash") as proc:
        yield proc


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def shoot(page: sync_api.Page, name: str) -> None:
    """The page at 1280×800 and at tablet width (800 px), full length."""
    ARTIFACTS.mkdir(exist_ok=True)
    for width, height in ((1280, 800), (800, 1100)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})


def login(page: sync_api.Page, base: str, key: str, path: str) -> None:
    page.goto(f"{base}{path}")
    assert "/dashboard/login" in page.url  # every page sends a stranger to the login form first
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}{path}")


def assert_player_at(page: sync_api.Page, seconds: float, timeout_s: float = 10.0) -> None:
    # Polled from Python: page.wait_for_function compiles its predicate with eval, which the
    # dashboard's Content-Security-Policy (no 'unsafe-eval') rightly refuses.
    deadline = time.monotonic() + timeout_s
    at = float("nan")
    while time.monotonic() < deadline:
        at = float(page.evaluate("() => document.getElementById('player').currentTime"))
        if abs(at - seconds) <= SEEK_TOLERANCE_S:
            return
        time.sleep(0.1)
    raise AssertionError(f"player at {at:.2f} s, expected {seconds:.2f} ± {SEEK_TOLERANCE_S} s")
