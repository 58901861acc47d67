"""The dashboard in a real browser: headless Chromium (Playwright) against a real API server
(uvicorn, subprocess) and a real Celery worker. Log in, upload the example call through the page,
watch it finish, seek the audio from an evidence item and from the chart, see an alert arrive live
in the feed and follow it to its moment; another tenant's call answers 404. Screenshots of every
page at 1280×800 and at tablet width land in test-artifacts/."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import EXAMPLE, running_worker

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


def _shoot(page: sync_api.Page, name: str) -> None:
    """The page at 1280×800 and at tablet width (800 px), full length."""
    ARTIFACTS.mkdir(exist_ok=True)
    for width, height in ((1280, 800), (800, 1100)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 800})


def _login(page: sync_api.Page, base: str, key: str, path: str) -> None:
    page.goto(f"{base}{path}")
    assert "/dashboard/login" in page.url  # every page sends a stranger to the login form first
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}{path}")


def _assert_player_at(page: sync_api.Page, seconds: float, timeout_s: float = 10.0) -> None:
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


def test_supervisor_flow_upload_seek_and_live_alert(server: str, celery_worker, browser, make_tenant) -> None:
    _, key = make_tenant(["customer"])
    # Fires on the first analyzed customer segment of any call: the alert of this test.
    rule = httpx.post(f"{server}/v1/rules", headers={"X-API-Key": key}, json={
        "name": "Customer spoke",
        "definition": {"severity": "high", "cooldown_s": 3600, "roles": ["customer"],
                       "when": {"confidence": {"min": 0}}}})
    assert rule.status_code == 201, rule.text

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    _login(page, server, key, "/dashboard/recordings")
    feed = context.new_page()
    feed.goto(f"{server}/dashboard/alerts")
    sync_api.expect(feed.locator("#feed-state")).to_have_text(re.compile(r"^Live"), timeout=15_000)
    assert feed.locator("#alert-feed [data-alert-id]").count() == 0

    # Upload through the page's form; it lands on the call's page while the call is analyzed.
    page.get_by_text("Upload a call").click()
    page.get_by_label("Recording").set_input_files(str(EXAMPLE))
    page.get_by_label("Channels").select_option("agent-customer")
    page.get_by_label("Agent (optional)").fill("agent-7")
    page.get_by_label("Queue (optional)").fill("billing")
    page.get_by_role("button", name="Upload and analyze").click()
    page.wait_for_url(f"{server}/dashboard/recordings/*")
    rec_id = page.url.rsplit("/", 1)[-1]
    uuid.UUID(rec_id)

    calls = context.new_page()
    calls.goto(f"{server}/dashboard/recordings")
    row = calls.locator(f"tr[data-id='{rec_id}']")
    # The row updates itself (polled JSON) until the call is final; the call page reloads itself.
    row.and_(calls.locator("[data-final='true']")).wait_for(timeout=120_000)
    assert "done" in row.locator("[data-cell='status']").inner_text()
    page.locator(".evidence-item").first.wait_for(timeout=30_000)
    assert page.locator("#call-status .status").inner_text() == "done"

    # The alert arrives in the open feed without a reload (pushed over server-sent events).
    item = feed.locator(f"#alert-feed li.fresh:has(a[href^='/dashboard/recordings/{rec_id}#t='])")
    item.wait_for(timeout=30_000)
    assert "Customer spoke" in item.inner_text()

    # An evidence item seeks the player to its moment (media served with Range support).
    evidence = page.locator(".evidence-item").last
    evidence_at = float(evidence.get_attribute("data-seek") or "nan")
    assert evidence_at > 1.0
    evidence.click()
    _assert_player_at(page, evidence_at)

    # So does a point of the customer's chart, by mouse and by keyboard.
    points = page.locator("svg.timeline-svg circle.point")
    assert points.count() >= 3
    point_at = float(points.first.get_attribute("data-seek") or "nan")
    points.first.click()
    _assert_player_at(page, point_at)
    points.nth(1).focus()
    page.keyboard.press("Enter")
    _assert_player_at(page, float(points.nth(1).get_attribute("data-seek") or "nan"))
    _shoot(page, "call")

    # The alert's link opens the call at the alert's moment (#t= seeks on load).
    _shoot(feed, "alerts")
    href = item.locator("a").get_attribute("href") or ""
    alert_at = float(href.split("#t=")[1])
    item.locator("a").click()
    feed.wait_for_url(f"{server}/dashboard/recordings/{rec_id}#t=*")
    _assert_player_at(feed, alert_at)

    row_text = row.inner_text()
    assert "agent-7" in row_text and "billing" in row_text and "agent, customer" in row_text
    assert row.locator("td.num a.alert-count").inner_text() == "1"
    _shoot(calls, "calls")
    overview = context.new_page()
    overview.goto(f"{server}/dashboard")
    assert overview.locator("#by-agent-h + .table-wrap").get_by_text("agent-7").count() == 1
    _shoot(overview, "overview")
    context.close()


def test_wrong_tenant_gets_404_for_a_call_page(server: str, browser, make_tenant) -> None:
    from datetime import UTC, datetime

    from tests.dashboard_fixtures import store_call

    owner_id, _ = make_tenant()
    rec_id = store_call(owner_id, datetime.now(UTC), {}, [("customer", "angry", 3.0, -0.6)])
    _, intruder_key = make_tenant()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    _login(page, server, intruder_key, "/dashboard/recordings")
    response = page.goto(f"{server}/dashboard/recordings/{rec_id}")
    assert response is not None and response.status == 404
    assert page.get_by_role("heading", name="Call not found").is_visible()
    assert context.request.get(f"{server}/dashboard/recordings/{rec_id}/media").status == 404
    _shoot(page, "not-found")
    context.close()
