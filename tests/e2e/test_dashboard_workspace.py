"""The supervisor workspace in a real browser (Chromium through Playwright, a real `callpulse api`):
acknowledging and resolving alerts with a note from the feed and from the call page, correcting a
segment's label in place, writing a rule (a validation error, fixed, backtested, saved), a
read-only session without write actions, revoking a key ending its session, labels, focus order,
text contrast (WCAG AA) and tablet width on every page, `/docs` rendering with every request
outside this host blocked, `/` leading to the dashboard, deleting a call and a rule behind a folded
confirmation. Screenshots at 1280×800 and tablet width go to test-artifacts/."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import urlparse

from tests import browser_fixtures as bf
from tests.browser_fixtures import browser, server  # noqa: F401 (fixtures)
from tests.dashboard_fixtures import store_alert, store_call, store_conversation

expect = bf.sync_api.expect


def test_docs_render_offline_and_root_leads_to_the_dashboard(server: str, browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    outside: list[str] = []

    def only_this_host(route) -> None:
        if urlparse(route.request.url).netloc == urlparse(server).netloc:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_this_host)
    page = context.new_page()
    page.goto(f"{server}/docs")
    # Swagger UI drew the operations from /openapi.json with its own script and styles.
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("CallPulse", timeout=20_000)
    expect(page.locator(".opblock-summary-path", has_text="/v1/recordings").first).to_be_visible()
    radius = "() => getComputedStyle(document.querySelector('.swagger-ui .opblock')).borderRadius"
    assert page.evaluate(radius) != "0px"  # the stylesheet applied
    bf.shoot(page, "docs")
    assert outside == []

    page.goto(f"{server}/")
    assert urlparse(page.url).path == "/dashboard/login"  # / → /dashboard → the login form
    assert page.locator("link[rel='icon']").get_attribute("href") == "/dashboard/static/favicon.svg"
    assert context.request.get(f"{server}/favicon.ico").ok
    assert outside == []
    context.close()


def test_acknowledge_and_resolve_an_alert_with_notes(server: str, browser, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {"agent": "ann", "queue": "billing"},
                        [("agent", None, 2.0, None), ("customer", "angry", 4.0, -0.7)])
    first = store_alert(tenant_id, rec_id, "Angry customer", "high", start_s=3.0)
    second = store_alert(tenant_id, rec_id, "Long silence", "low", start_s=5.0)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    bf.login(page, server, key, "/dashboard/alerts")

    item = page.locator(f"#alert-{first}")
    expect(item.locator("[data-cell='state']")).to_have_text("open")
    item.get_by_label("Note on Angry customer").fill("calling the customer back")
    item.get_by_role("button", name="Acknowledge").click()
    # Replaced in place by the server's re-rendering: no reload, the feed keeps its place.
    expect(item.locator("[data-cell='state']")).to_have_text("acknowledged")
    expect(item.locator("[data-cell='note']")).to_contain_text("calling the customer back")
    expect(item.get_by_role("button", name="Acknowledge")).to_have_count(0)
    bf.shoot(page, "alerts-actions")

    # Filters: open alerts of the low severity only.
    page.get_by_label("Severity").select_option("low")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"severity=low"))
    expect(page.locator("#alert-feed [data-alert-id]")).to_have_count(1)
    expect(page.locator(f"#alert-{second}")).to_be_visible()

    # From the call page: resolve the acknowledged alert with a note.
    page.goto(f"{server}/dashboard/recordings/{rec_id}")
    on_call = page.locator(f"#alert-{first}")
    on_call.get_by_label("Note on Angry customer").fill("refund issued")
    on_call.get_by_role("button", name="Resolve").click()
    expect(on_call.locator("[data-cell='state']")).to_have_text("resolved")
    expect(on_call.locator("[data-cell='note']")).to_contain_text("refund issued")
    expect(on_call.locator("form")).to_have_count(0)
    bf.shoot(page, "call-alerts")

    page.goto(f"{server}/dashboard/alerts?state=resolved")
    expect(page.locator("#alert-feed [data-alert-id]")).to_have_count(1)
    expect(page.locator(f"#alert-{first}")).to_contain_text("refund issued")
    context.close()


def _boxes(page, *selectors: str) -> list[dict[str, float]]:
    boxes = [page.locator(sel).bounding_box() for sel in selectors]
    assert all(boxes), selectors
    return boxes  # type: ignore[return-value]


def test_correct_a_segment_label_in_place(server: str, browser, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {"agent": "ann"},
                        [("agent", None, 2.0, None), ("customer", "neutral", 4.0, 0.1),
                         ("agent", None, 2.0, None), ("customer", "sad", 4.0, -0.5)])
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    bf.login(page, server, key, f"/dashboard/recordings/{rec_id}")
    # Summary first; only the customer is charted, the agent's chart is replaced by one line.
    expect(page.locator("[data-cell='sentiment']")).to_contain_text("neutral")
    expect(page.locator("[data-cell='sentiment']")).to_contain_text("worsened")
    expect(page.locator("svg.timeline-svg")).to_have_count(1)
    expect(page.locator(".not-analyzed[data-role='agent']")).to_be_visible()
    legend, chart = _boxes(page, ".legend.side", "svg.timeline-svg")
    assert legend["x"] >= chart["x"] + chart["width"] - 1  # beside, not below

    segment = page.locator("#seg-3")
    segment.get_by_text("Correct the label").click()
    segment.get_by_label("True label").select_option("angry")
    segment.get_by_label("Note (optional)").fill("raised voice")
    segment.get_by_role("button", name="Save label").click()
    # Re-rendered in place: the correction with who and when, the page not reloaded.
    expect(segment.locator("[data-cell='correction']")).to_have_text("supervisor: angry")
    expect(segment.locator("[data-cell='corrected-by']")).to_contain_text("by test (")
    expect(segment.locator("[data-cell='corrected-by']")).to_contain_text("raised voice")
    when = segment.locator("[data-cell='corrected-by'] time")
    expect(when).to_have_attribute("datetime", re.compile(r"^20\d\d-"))
    bf.shoot(page, "call-corrected")
    # A refused label is explained beside the form, not a lost page.
    segment.get_by_text("Change the correction").click()
    # A label the form does not offer (a stale page, a hand-made request): the API's reason.
    stale = "(s) => { s.options[0].value = 'purple'; s.value = 'purple'; }"
    segment.get_by_label("True label").evaluate(stale)
    segment.get_by_role("button", name="Save label").click()
    expect(segment.get_by_role("alert")).to_contain_text("unknown label")

    page.set_viewport_size({"width": 800, "height": 1100})
    legend, chart = _boxes(page, ".legend.side", "svg.timeline-svg")
    assert legend["y"] >= chart["y"] + chart["height"] - 1  # tablet: below the chart
    context.close()


def test_write_a_rule_fix_its_error_backtest_and_save(server: str, browser, make_tenant) -> None:
    tenant_id, key = make_tenant(["customer"])
    angry = store_call(tenant_id, datetime.now(UTC), {}, [("customer", "angry", 4.0, -0.6)])
    store_call(tenant_id, datetime.now(UTC), {}, [("customer", "happy", 4.0, 0.6)])
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    bf.login(page, server, key, "/dashboard/rules")
    page.get_by_role("link", name="New rule").click()
    page.get_by_label("Name").fill("Angry customer")
    definition = page.get_by_label("Definition (YAML or JSON)")
    definition.fill("severity: high\nwhen:\n  label: furious\n")
    page.get_by_role("button", name="Create rule").click()
    # The API's validation message, next to the field, with the text as typed.
    errors = page.locator("#definition-errors")
    expect(errors).to_contain_text("when.label")
    expect(definition).to_have_attribute("aria-invalid", "true")
    expect(definition).to_have_value(re.compile("furious"))
    bf.shoot(page, "rule-error")

    definition.fill("severity: high\nwhen:\n  label: angry\n")
    page.get_by_role("button", name="Backtest").click()
    expect(page.locator(".backtest-summary")).to_contain_text("Would fire 1 time on 1 of 2 calls")
    expect(page.locator(f".firings a[href^='/dashboard/recordings/{angry}#t=']")).to_be_visible()
    expect(page.locator("#definition-errors")).to_have_count(0)
    bf.shoot(page, "rule-backtest")

    page.get_by_role("button", name="Create rule").click()
    expect(page.get_by_role("status").filter(has_text="Saved")).to_contain_text("version 1 is live")
    definition.fill("severity: critical\nwhen:\n  label: angry\ncooldown_s: 60\n")
    page.get_by_role("button", name="Save as a new version").click()
    expect(page.get_by_role("status").filter(has_text="Saved")).to_contain_text("version 2 is live")
    expect(page.locator(".versions > li")).to_have_count(2)

    page.get_by_role("link", name="← All rules").click()
    row = page.locator("#rules tbody tr", has_text="Angry customer")
    expect(row.locator("[data-cell='state']")).to_contain_text("enabled")
    row.get_by_role("button", name="Disable Angry customer").click()
    expect(row.locator("[data-cell='state']")).to_contain_text("disabled")
    bf.shoot(page, "rules")
    context.close()


def _key(tenant_id, scope: str, name: str) -> str:
    from db.queries.tenants import create_api_key
    from db.session import transaction

    with transaction() as s:
        return create_api_key(s, tenant_id, name, scope=scope)[1]


UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                 && !e.getAttribute('aria-labelledby'))
  .map((e) => e.name || e.id)"""


FOCUS_STEPS = 12
# Numbers the focused element and says whether the focus is drawn: the stylesheet's outline, or,
# for a player, the browser's own controls (focus is inside their shadow tree, which draws it).
MARK_FOCUS = """() => {
  const e = document.activeElement;
  window.focusSteps = (window.focusSteps || 0) + 1;
  e.dataset.focusStep = window.focusSteps;
  if (e.matches("audio[controls], video[controls]")) return "visible";
  return e !== document.body && getComputedStyle(e).outlineStyle !== "none" ? "visible" : e.tagName;
}"""
FOCUS_IN_DOM_ORDER = """() => {
  const stops = [...document.querySelectorAll("[data-focus-step]")]
    .sort((a, b) => Number(a.dataset.focusStep) - Number(b.dataset.focusStep));
  window.focusSteps = 0;
  const ordered = stops.every((e, i) => i === 0 || (stops[i - 1].compareDocumentPosition(e) & 4));
  stops.forEach((e) => delete e.dataset.focusStep);
  return ordered;
}"""


# WCAG 2 contrast of every visible text against the first opaque background behind it: 4.5:1, or
# 3:1 for large text (24 px, or 18.7 px bold). Disabled controls are exempt, as WCAG says.
LOW_CONTRAST = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0.5) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const style = getComputedStyle(el);
    if (!own || el.closest("svg") || el.disabled || !el.getClientRects().length) continue;
    if (style.visibility === "hidden") continue;
    const [hi, lo] = [lum(rgb(style.color)), lum(background(el))].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const what = el.tagName + "." + el.className + " '" + el.textContent.trim().slice(0, 30) + "'";
    if (ratio < need) bad.push(what + " " + ratio.toFixed(2));
  }
  return bad;
}"""


def test_read_only_session_then_revoked_and_pages_accessible(server: str, browser, make_tenant) -> None:
    tenant_id, _ = make_tenant()
    admin_key, read_key = _key(tenant_id, "admin", "ops lead"), _key(tenant_id, "read", "wallboard")
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("agent", None, 2.0, None),
                                                           ("customer", "angry", 4.0, -0.6)])
    store_alert(tenant_id, rec_id)
    store_conversation(rec_id)  # the call page's and the overview's conversation measures

    admin = browser.new_context(viewport={"width": 1280, "height": 800})
    admin_page = admin.new_page()
    bf.login(admin_page, server, admin_key, "/dashboard/rules/new")
    admin_page.get_by_label("Name").fill("Angry customer")
    admin_page.get_by_role("button", name="Create rule").click()
    rule_path = admin_page.url.split(server)[1].split("?")[0]
    pages = ["/dashboard", "/dashboard/recordings", f"/dashboard/recordings/{rec_id}", "/dashboard/alerts",
             "/dashboard/review", "/dashboard/rules", rule_path, "/dashboard/webhooks", "/dashboard/keys"]
    # Every control has a label, the first Tab reaches the skip link, nothing overflows a tablet.
    for path in pages:
        admin_page.goto(f"{server}{path}")
        assert admin_page.evaluate(UNLABELLED) == [], path
        assert admin_page.evaluate(LOW_CONTRAST) == [], path
        admin_page.keyboard.press("Tab")
        assert admin_page.evaluate("() => document.activeElement.textContent") == "Skip to content", path
        # Focus order: the next stops follow the reading (DOM) order, each with a visible outline.
        for _ in range(FOCUS_STEPS):
            admin_page.keyboard.press("Tab")
            assert admin_page.evaluate(MARK_FOCUS) == "visible", path
        assert admin_page.evaluate(FOCUS_IN_DOM_ORDER), path
        admin_page.set_viewport_size({"width": 800, "height": 1100})
        overflow = admin_page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{path} is {overflow} px wider than a tablet"
        admin_page.set_viewport_size({"width": 1280, "height": 800})
    bf.shoot(admin_page, "keys")

    viewer = browser.new_context(viewport={"width": 1280, "height": 800})
    page = viewer.new_page()
    bf.login(page, server, read_key, "/dashboard/alerts")
    for path in pages[:-1]:
        page.goto(f"{server}{path}")
        forms = page.locator("main form[method='post']")
        if path == rule_path:  # trying a rule stores nothing: a backtest is all a viewer may do
            expect(page.get_by_role("button", name="Backtest")).to_be_visible()
            expect(page.get_by_role("button", name=re.compile("Save|Create"))).to_have_count(0)
        else:
            expect(forms).to_have_count(0)
    expect(page.get_by_role("link", name="Keys")).to_have_count(0)
    bf.shoot(page, "read-only-call")

    # The admin revokes the viewer's key: the viewer's next page is the login form.
    admin_page.goto(f"{server}/dashboard/keys")
    admin_page.get_by_role("button", name="Revoke wallboard").click()
    state = admin_page.locator("#keys tr", has_text="wallboard").locator("[data-cell='state']")
    expect(state).to_contain_text("revoked")
    page.goto(f"{server}/dashboard/alerts")
    assert "/dashboard/login" in page.url
    admin.close()
    viewer.close()


def test_delete_a_call_from_its_page_and_a_rule_from_its_editor(server: str, browser, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("customer", "angry", 4.0, -0.6)])
    store_alert(tenant_id, rec_id, rule_name="To be deleted")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    bf.login(page, server, key, f"/dashboard/recordings/{rec_id}")
    # Folded: the button shows only once the operator opens "Delete this call…".
    button = page.get_by_role("button", name=re.compile("^Delete call"))
    expect(button).to_be_hidden()
    page.get_by_text("Delete this call…").click()
    expect(button).to_be_visible()
    bf.shoot(page, "call-delete")
    button.click()
    expect(page.locator("h1")).to_have_text("Call deleted")
    page.goto(f"{server}/dashboard/recordings")
    expect(page.locator(f"tr[data-id='{rec_id}']")).to_have_count(0)

    page.goto(f"{server}/dashboard/rules")
    page.get_by_role("link", name="To be deleted").click()
    page.get_by_text("Delete this rule…").click()
    page.get_by_role("button", name="Delete rule To be deleted").click()
    page.wait_for_url(f"{server}/dashboard/rules")
    expect(page.get_by_text("To be deleted")).to_have_count(0)
    context.close()
