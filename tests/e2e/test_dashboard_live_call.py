"""A live call on the dashboard: it appears in an open calls list as live, its page shows status live
and its timeline grows while the call streams, without a reload; an alert it fires arrives in the
open feed marked as a live call and on the open call page, and links to the call's page while the
call is still live; once the call is done the page shows it with its audio. Real `callpulse api`,
real worker, headless Chromium, a WebSocket client streaming real speech."""

from __future__ import annotations

import json
import re
import time

import httpx
from websockets.sync.client import connect

from tests.browser_fixtures import browser, celery_worker, login, server, shoot, sync_api  # noqa: F401
from tests.live_support import Received, drain, pcm16, read_until_closed, stream
from tests.support import EXAMPLE

expect = sync_api.expect


def _count(page, selector: str) -> int:
    return int(page.evaluate(f"() => document.querySelectorAll({json.dumps(selector)}).length"))


def test_live_call_page_grows_without_reload(server: str, celery_worker, browser, make_tenant) -> None:
    _, key = make_tenant(["customer"])
    rule = httpx.post(f"{server}/v1/rules", headers={"X-API-Key": key}, json={
        "name": "Customer on the line",
        "definition": {"severity": "high", "cooldown_s": 3600, "roles": ["customer"],
                       "when": {"confidence": {"min": 0}}}})
    assert rule.status_code == 201, rule.text
    call = pcm16(EXAMPLE)
    got = Received()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    calls = context.new_page()
    login(calls, server, key, "/dashboard/recordings")
    feed = context.new_page()
    feed.goto(f"{server}/dashboard/alerts")
    expect(feed.locator("#feed-state")).to_have_text(re.compile(r"^Live"), timeout=15_000)
    ws_url = server.replace("http://", "ws://") + "/v1/live"
    with connect(ws_url, additional_headers={"X-API-Key": key}) as ws:
        ws.send(json.dumps({"event": "start", "external_id": "live-on-dash", "encoding": "pcm_s16le",
                            "sample_rate": 16000, "channels": 2,
                            "channel_roles": {"0": "agent", "1": "customer"},
                            "metadata": {"agent": "agent-live"}}))
        drain(ws, got, timeout=30)
        rec_id = got.messages[0]["recording_id"]
        # The open calls list shows the new call, live, without a reload.
        row = calls.locator(f"tr[data-id='{rec_id}']")
        row.wait_for(timeout=15_000)
        assert row.locator("[data-cell='status'] .status").inner_text() == "live"
        assert "live-on-dash" in row.inner_text() and "agent-live" in row.inner_text()
        page = context.new_page()
        page.goto(f"{server}/dashboard/recordings/{rec_id}")
        assert page.locator("#call-status .status").inner_text() == "live"
        assert _count(page, "ol.segments li.segment") == 0
        assert "once it has ended" in page.locator("#player-later").inner_text()  # no file to play yet
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

        # The rule fires while the call is live: the open feed gets the alert, marked as a live
        # call, and its link opens the call's page while the call is still streaming.
        item = feed.locator(f"#alert-feed li:has(a[href^='/dashboard/recordings/{rec_id}#t='])")
        deadline = time.monotonic() + 60
        while not (item.count() and got.of("alert")):
            assert time.monotonic() < deadline, "no alert of the live call reached the feed and the socket"
            drain(ws, got, timeout=0.5)
        assert "Customer on the line" in item.inner_text()
        expect(item.locator("[data-cell='call-live']")).to_have_text("live call")
        shoot(feed, "alerts-live-call")
        # The open call page shows the alert too, in place: its section and the summary's count.
        expect(page.locator("#alerts .alert-item")).to_have_count(1, timeout=15_000)
        expect(page.locator("section.summary")).to_contain_text("1 (1 not resolved)")
        assert page.evaluate("() => window.sameDocument === true")
        item.locator("a.alert-link").click()
        feed.wait_for_url(f"{server}/dashboard/recordings/{rec_id}#t=*")
        assert feed.locator("#call-status .status").inner_text() == "live"
        assert feed.locator("#alerts .alert-item").count() >= 1

        stream(ws, call[20 * 16000:], got, speed=5.0)
        ws.send(json.dumps({"event": "stop"}))
        read_until_closed(ws, got)
    assert got.close_code == 1000 and got.of("stopped")
    deadline = time.monotonic() + 120
    while page.locator("#call-status .status").inner_text() != "done":  # reloaded once final
        assert time.monotonic() < deadline, "the call page never showed done"
        time.sleep(0.5)
    assert _count(page, "ol.segments li.segment") == 6  # the example call's six turns
    assert page.locator("#player").count() == 1 and page.locator("#player-later").count() == 0
    row.and_(calls.locator("[data-final='true']")).wait_for(timeout=30_000)
    assert row.locator("[data-cell='status'] .status").inner_text() == "done"
    context.close()
