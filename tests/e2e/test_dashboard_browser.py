"""The dashboard in a real browser: headless Chromium (Playwright) against a real API server
(uvicorn, subprocess) and a real Celery worker. Log in, upload the example call through the page,
watch it appear and finish in an open calls list, seek the audio from an evidence item and from the
chart, see an alert arrive live in the feed and follow it to its moment; another tenant's call
answers 404. Screenshots of every page at 1280×800 and at tablet width land in test-artifacts/."""

from __future__ import annotations

import re
import uuid

import httpx

from tests import browser_fixtures as bf
from tests.browser_fixtures import browser, celery_worker, server  # noqa: F401 (fixtures)
from tests.support import EXAMPLE


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
    bf.login(page, server, key, "/dashboard/recordings")
    feed = context.new_page()
    feed.goto(f"{server}/dashboard/alerts")
    bf.sync_api.expect(feed.locator("#feed-state")).to_have_text(re.compile(r"^Live"), timeout=15_000)
    assert feed.locator("#alert-feed [data-alert-id]").count() == 0
    # A calls list already open (searching this agent) and a search that the call will not match.
    calls = context.new_page()
    calls.goto(f"{server}/dashboard/recordings?agent=agent-7")
    other_search = context.new_page()
    other_search.goto(f"{server}/dashboard/recordings?agent=someone-else")
    assert calls.locator("#calls tbody tr").count() == 0 and calls.locator("#calls-empty").is_visible()

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

    # The new call appears in the open list without a reload, then its row updates itself (polled
    # JSON) until the call is final; the call page reloads itself.
    row = calls.locator(f"tr[data-id='{rec_id}']")
    row.wait_for(timeout=15_000)
    assert calls.locator("#calls-empty").is_hidden()
    row.and_(calls.locator("[data-final='true']")).wait_for(timeout=120_000)
    assert other_search.locator("#calls tbody tr").count() == 0
    assert "done" in row.locator("[data-cell='status']").inner_text()
    page.locator(".evidence-item").first.wait_for(state="attached", timeout=30_000)
    assert page.locator("#call-status .status").inner_text() == "done"

    # The alert arrives in the open feed without a reload (pushed over server-sent events).
    item = feed.locator(f"#alert-feed li.fresh:has(a[href^='/dashboard/recordings/{rec_id}#t='])")
    item.wait_for(timeout=30_000)
    assert "Customer spoke" in item.inner_text()
    # Acknowledged right there: the item came over the stream, its form posts with the page's token.
    alert_item = feed.locator(f"#alert-{item.get_attribute('data-alert-id')}")
    alert_item.get_by_label("Note on Customer spoke").fill("on it")
    alert_item.get_by_role("button", name="Acknowledge").click()
    bf.sync_api.expect(alert_item.locator("[data-cell='state']")).to_have_text("acknowledged")
    bf.sync_api.expect(alert_item.locator("[data-cell='note']")).to_contain_text("on it")

    # Evidence is folded under each segment's one-line reason, the model's internals further away.
    folded = page.locator("details.evidence-details").last
    evidence = folded.locator(".evidence-item").last
    assert not evidence.is_visible() and page.locator("details.internals").first.is_visible()
    assert "classifier" not in page.locator("ol.segments").inner_text()
    # An opened evidence item seeks the player to its moment (media served with Range support).
    folded.locator("summary").click()
    evidence_at = float(evidence.get_attribute("data-seek") or "nan")
    assert evidence_at > 1.0
    evidence.click()
    bf.assert_player_at(page, evidence_at)

    # So does a point of the customer's chart, by mouse and by keyboard.
    points = page.locator("svg.timeline-svg circle.point")
    assert points.count() >= 3
    point_at = float(points.first.get_attribute("data-seek") or "nan")
    points.first.click()
    bf.assert_player_at(page, point_at)
    points.nth(1).focus()
    page.keyboard.press("Enter")
    bf.assert_player_at(page, float(points.nth(1).get_attribute("data-seek") or "nan"))
    bf.shoot(page, "call")

    # The alert's link opens the call at the alert's moment (#t= seeks on load).
    bf.shoot(feed, "alerts")
    href = alert_item.locator("a").get_attribute("href") or ""
    alert_at = float(href.split("#t=")[1])
    alert_item.locator("a").click()
    feed.wait_for_url(f"{server}/dashboard/recordings/{rec_id}#t=*")
    bf.assert_player_at(feed, alert_at)

    row_text = row.inner_text()
    assert "agent-7" in row_text and "billing" in row_text and "agent, customer" in row_text
    assert row.locator("td.num a.alert-count").inner_text() == "1"
    bf.shoot(calls, "calls")
    overview = context.new_page()
    overview.goto(f"{server}/dashboard")
    assert overview.locator("#by-agent-h + .table-wrap").get_by_text("agent-7").count() == 1
    bf.shoot(overview, "overview")
    context.close()


def test_wrong_tenant_gets_404_for_a_call_page(server: str, browser, make_tenant) -> None:
    from datetime import UTC, datetime

    from tests.dashboard_fixtures import store_call

    owner_id, _ = make_tenant()
    rec_id = store_call(owner_id, datetime.now(UTC), {}, [("customer", "angry", 3.0, -0.6)])
    _, intruder_key = make_tenant()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    bf.login(page, server, intruder_key, "/dashboard/recordings")
    response = page.goto(f"{server}/dashboard/recordings/{rec_id}")
    assert response is not None and response.status == 404
    assert page.get_by_role("heading", name="Call not found").is_visible()
    assert context.request.get(f"{server}/dashboard/recordings/{rec_id}/media").status == 404
    bf.shoot(page, "not-found")
    context.close()
