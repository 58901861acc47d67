"""Webhooks in a real browser (Chromium, a real `callpulse api`, a real worker delivering to a
real HTTP receiver on loopback): create an endpoint and copy its secret (shown once), resolve an
alert in the dashboard and see the signed delivery arrive and show as succeeded, redeliver it
(same webhook-id), disable the endpoint. Screenshots go to test-artifacts/."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from tests import browser_fixtures as bf
from tests.browser_fixtures import browser, server  # noqa: F401 (fixtures)
from tests.dashboard_fixtures import store_alert, store_call
from tests.rules_fixtures import allow_loopback_targets, receiver, rules_worker  # noqa: F401 (fixtures)

expect = bf.sync_api.expect


def _reload_until(page, locator, text: str, timeout_s: float = 30.0) -> None:
    """The delivery log is a plain page: reload it until the worker's write shows."""
    deadline = time.monotonic() + timeout_s
    while text not in (locator.inner_text() if locator.count() else ""):
        assert time.monotonic() < deadline, f"{text!r} never showed"
        time.sleep(0.5)
        page.reload()


# Argument order matters: the loopback setting must be in the environment before the API starts.
def test_create_resolve_deliver_redeliver_disable(allow_loopback_targets, receiver, rules_worker, server,
                                                  browser, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("customer", "angry", 4.0, -0.6)])
    alert_id = store_alert(tenant_id, rec_id)
    url, path = receiver.endpoint()
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    bf.login(page, server, key, "/dashboard/webhooks")

    page.get_by_label("URL").fill(url)
    page.get_by_label("alert.fired").uncheck()
    page.get_by_label("alert.resolved").check()
    page.get_by_label("Description (optional)").fill("CRM escalations")
    page.get_by_role("button", name="Create endpoint").click()
    secret = page.locator("#webhook-secret").inner_text()
    assert secret.startswith("whsec_")
    receiver.sign_with(path, secret)
    bf.shoot(page, "webhook-created")
    page.goto(f"{server}/dashboard/webhooks")
    assert "whsec_" not in page.content()  # shown once

    page.goto(f"{server}/dashboard/alerts")
    page.locator(f"#alert-{alert_id}").get_by_role("button", name="Resolve").click()
    expect(page.locator(f"#alert-{alert_id} [data-cell='state']")).to_have_text("resolved")
    first = receiver.wait(path, lambda got: len(got) >= 1)[0]
    assert first.valid and '"alert.resolved"' in first.body

    page.goto(f"{server}/dashboard/webhooks")
    page.get_by_role("link", name=url).click()
    row = page.locator("#deliveries tbody tr").first
    _reload_until(page, row.locator("[data-cell='status']"), "succeeded")
    assert row.locator("[data-cell='attempts']").inner_text() == "1"
    row.get_by_role("button", name="Redeliver alert.resolved", exact=False).click()
    again = receiver.wait(path, lambda got: len(got) >= 2)
    assert again[1].valid and again[1].headers["webhook-id"] == first.headers["webhook-id"]
    _reload_until(page, page.locator("#deliveries tbody tr").first.locator("[data-cell='attempts']"), "2")
    bf.shoot(page, "webhook-deliveries")

    page.get_by_role("link", name="← All endpoints").click()
    row = page.locator("#webhooks tbody tr", has_text=url)
    row.get_by_role("button", name=f"Disable {url}").click()
    expect(page.locator("#webhooks tbody tr", has_text=url).locator("[data-cell='state']")).to_contain_text(
        "disabled")
    bf.shoot(page, "webhooks")
    context.close()
