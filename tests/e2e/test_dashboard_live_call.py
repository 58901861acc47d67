"""A live call on the dashboard: its page shows status live and its timeline grows while the call
streams, without a reload (the player keeps its place); once the call is done the page shows it.
Real `callpulse api`, real worker, headless Chromium, a WebSocket client streaming real speech."""

from __future__ import annotations

import json
import time

from websockets.sync.client import connect

from tests.browser_fixtures import browser, celery_worker, login, server, shoot  # noqa: F401
from tests.live_support import Received, drain, pcm16, stream
from tests.support import EXAMPLE


def _count(page, selector: str) -> int:
    return int(page.evaluate(f"() => document.querySelectorAll({json.dumps(selector)}).length"))


def test_live_call_page_grows_without_reload(server: str, celery_worker, browser, make_tenant) -> None:
    _, key = make_tenant(["customer"])
    call = pcm16(EXAMPLE)
    got = Received()
    ws_url = server.replace("http://", "ws://") + "/v1/live"
    with connect(ws_url, additional_headers={"X-API-Key": key}) as ws:
        ws.send(json.dumps({"event": "start", "encoding": "pcm_s16le", "sample_rate": 16000, "channels": 2,
                            "channel_roles": {"0": "agent", "1": "customer"}}))
        drain(ws, got, timeout=30)
        rec_id = got.messages[0]["recording_id"]
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        login(page, server, key, f"/dashboard/recordings/{rec_id}")
        assert page.locator("#call-status .status").inner_text() == "live"
        assert _count(page, "ol.segments li.segment") == 0
        page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads

        stream(ws, call[: 20 * 16000], got, speed=5.0)  # the first 20 s: two turns each side
        deadline = time.monotonic() + 90
        while _count(page, "ol.segments li.segment") < 2 or not _count(page, ".timeline-svg"):
            assert time.monotonic() < deadline, "the call page did not grow"
            drain(ws, got, timeout=0.5)
        assert page.evaluate("() => window.sameDocument === true")  # grown in place
        assert page.locator("#call-status .status").inner_text() == "live"
        assert "live call" in page.locator("#call-status .progress").inner_text()
        shoot(page, "live-call")

        stream(ws, call[20 * 16000:], got, speed=5.0)
        ws.send(json.dumps({"event": "stop"}))
        drain(ws, got, timeout=60)
    deadline = time.monotonic() + 120
    while page.locator("#call-status .status").inner_text() != "done":  # reloaded once final
        assert time.monotonic() < deadline, "the call page never showed done"
        time.sleep(0.5)
    assert _count(page, "ol.segments li.segment") == 6  # the example call's six turns
    context.close()
