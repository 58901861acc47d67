"""Forged dashboard forms in a real browser: headless Chromium (Playwright) against a real
`callpulse api`, with the attacker's pages served from other origins by a small HTTP server.

- Login CSRF: a page on another site (http://localhost:P, while the dashboard is
  http://127.0.0.1:Q) posts the attacker's API key to /dashboard/login; before the fix the victim's
  browser was then logged into the attacker's tenant, and the victim's uploads landed there.
- Upload CSRF from the same site: a page on another port of the dashboard's own host sends an
  upload with the victim's cookie (SameSite=Lax lets same-site requests carry it).
- Logout CSRF from another site.
Each must be refused, and the victim's session and data stay as they were."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Recording
from db.session import transaction
from tests.browser_fixtures import browser, login, server, sync_api  # noqa: F401

PAGES = {
    "login.html": """<!doctype html><title>win a prize</title>
<form id="f" method="post" action="{api}/dashboard/login">
  <input name="api_key" value="{attacker_key}"><input name="next" value="/dashboard">
</form><script>document.getElementById("f").submit()</script>""",
    "upload.html": """<!doctype html><title>cute cats</title><script>
const body = new FormData();
body.append("file", new Blob([new Uint8Array(4096)], {{type: "audio/wav"}}), "call.wav");
body.append("layout", "mono");
fetch("{api}/dashboard/upload", {{method: "POST", body, credentials: "include", mode: "no-cors"}})
  .finally(() => {{ document.title = "sent"; }});
</script>""",
    "logout.html": """<!doctype html><title>news</title>
<form id="f" method="post" action="{api}/dashboard/logout"></form>
<script>document.getElementById("f").submit()</script>""",
}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def attacker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """An HTTP server for the attacker's pages, reachable as localhost:P (another site than
    127.0.0.1) and as 127.0.0.1:P (the same site, another origin)."""
    root = tmp_path_factory.mktemp("attacker")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def _write_pages(root: Path, api: str, attacker_key: str) -> None:
    for name, template in PAGES.items():
        (root / name).write_text(template.format(api=api, attacker_key=attacker_key))


def _recordings(tenant_id: uuid.UUID) -> int:
    with transaction() as s:
        count = s.scalar(select(func.count()).select_from(Recording).where(Recording.tenant_id == tenant_id))
    return int(count or 0)


def test_login_csrf_from_another_site_is_refused(server: str, browser, attacker, make_tenant) -> None:
    root, port = attacker
    _, attacker_key = make_tenant()
    _write_pages(root, server, attacker_key)
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server}/dashboard/login")  # the victim has been here before: a login cookie exists
    with page.expect_response(lambda r: r.url.startswith(f"{server}/dashboard/login")
                              and r.request.method == "POST") as posted:
        page.goto(f"http://localhost:{port}/login.html")
    assert posted.value.status == 403
    assert not any(c["name"] == "callpulse_session" for c in context.cookies())
    page.goto(f"{server}/dashboard/recordings")
    assert "/dashboard/login" in page.url  # not logged in: certainly not as the attacker
    context.close()


def test_upload_and_logout_csrf_are_refused(server: str, browser, attacker, make_tenant) -> None:
    root, port = attacker
    victim_tenant, victim_key = make_tenant()
    _write_pages(root, server, "unused")
    context = browser.new_context()
    page = context.new_page()
    login(page, server, victim_key, "/dashboard/recordings")

    # Same site (127.0.0.1), another port: the cookie travels, the request must still fail.
    with page.expect_response(lambda r: r.url == f"{server}/dashboard/upload") as posted:
        page.goto(f"http://127.0.0.1:{port}/upload.html")
    assert posted.value.status == 403
    assert _recordings(victim_tenant) == 0

    with page.expect_response(lambda r: r.url == f"{server}/dashboard/logout") as posted:
        page.goto(f"http://localhost:{port}/logout.html")
    assert posted.value.status in (303, 403)  # cross-site: Lax keeps the cookie home, or we refuse
    page.goto(f"{server}/dashboard/recordings")
    assert page.url == f"{server}/dashboard/recordings"  # still logged in

    # The dashboard's own logout form works.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{server}/dashboard/login")
    page.goto(f"{server}/dashboard/recordings")
    assert "/dashboard/login" in page.url
    context.close()
