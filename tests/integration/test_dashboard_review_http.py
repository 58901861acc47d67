"""The dashboard's Review page at the HTTP level (no browser): a one-click label without script
(a form post answered 303 back to the page, which no longer lists it), the script's fragment
answer, the request-forgery check, read-only sessions (no buttons, posts refused), another
tenant's segment, and a bad `limit`."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import Segment, SegmentLabel
from db.queries.tenants import create_api_key
from db.session import transaction
from tests.dashboard_fixtures import csrf_token, login_form_token, store_call


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app(), follow_redirects=False) as c:
        yield c


def _login(client: TestClient, key: str) -> str:
    resp = client.post("/dashboard/login", data={"api_key": key, "next": "/dashboard/review",
                                                 "csrf_token": login_form_token(client)})
    assert resp.status_code == 303, resp.text
    return csrf_token(client.get("/dashboard/review").text)


def _segments(rec_id: uuid.UUID) -> list[uuid.UUID]:
    with transaction() as s:
        return list(s.scalars(select(Segment.id).where(Segment.recording_id == rec_id, Segment.analyzed)
                              .order_by(Segment.index)))


def _listed(html: str) -> list[str]:
    return re.findall(r'data-review-item="([^"]+)"', html)


def test_label_from_the_review_page_without_and_with_script(client: TestClient, make_tenant) -> None:
    tenant_id, key = make_tenant()
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("agent", None, 2.0, None),
                                                           ("customer", "angry", 4.0, -0.6),
                                                           ("customer", "sad", 4.0, -0.4)])
    first, second = _segments(rec_id)
    token = _login(client, key)
    page = client.get("/dashboard/review")
    assert page.status_code == 200 and set(_listed(page.text)) == {str(first), str(second)}
    assert f'action="/dashboard/segments/{first}/label"' in page.text and 'value="surprise"' in page.text

    # Without the token the post is refused and nothing is stored.
    refused = client.post(f"/dashboard/segments/{first}/label",
                          data={"label": "fear", "next": "/dashboard/review"})
    assert refused.status_code == 403
    # A plain form post: stored, then back to the review page, which no longer lists it.
    resp = client.post(f"/dashboard/segments/{first}/label",
                       data={"label": "fear", "next": "/dashboard/review", "csrf_token": token})
    assert resp.status_code == 303 and resp.headers["location"].startswith("/dashboard/review")
    assert _listed(client.get("/dashboard/review").text) == [str(second)]
    # The script's request: the answer is the confirmation line that replaces the item.
    frag = client.post(f"/dashboard/segments/{second}/label", data={"label": "sad", "csrf_token": token},
                       headers={"X-Dashboard-Fragment": "review"})
    assert frag.status_code == 200
    assert f'data-reviewed="{second}"' in frag.text and "<strong>sad</strong>" in frag.text
    assert "data-review-item" not in frag.text
    with transaction() as s:
        rows = {r.segment_id: r.label for r in s.scalars(select(SegmentLabel).where(
            SegmentLabel.tenant_id == tenant_id))}
    assert rows == {first: "fear", second: "sad"}
    assert "Nothing to review" in client.get("/dashboard/review").text

    # Another tenant cannot label these segments from its own session.
    _, other_key = make_tenant()
    other = TestClient(client.app, follow_redirects=False)
    other_token = _login(other, other_key)
    assert _listed(other.get("/dashboard/review").text) == []
    theirs = other.post(f"/dashboard/segments/{first}/label",
                        data={"label": "happy", "csrf_token": other_token})
    assert theirs.status_code == 404

    for bad in ("0", "101", "x"):
        assert client.get(f"/dashboard/review?limit={bad}").status_code == 422


def test_read_only_session_sees_the_queue_without_buttons(client: TestClient, make_tenant) -> None:
    tenant_id, _ = make_tenant()
    with transaction() as s:
        read_key = create_api_key(s, tenant_id, "wallboard", scope="read")[1]
    rec_id = store_call(tenant_id, datetime.now(UTC), {}, [("customer", "angry", 4.0, -0.6)])
    (segment,) = _segments(rec_id)
    token = _login(client, read_key)
    page = client.get("/dashboard/review")
    assert _listed(page.text) == [str(segment)] and "<audio" in page.text
    assert "<form method=\"post\"" not in page.text.split("<main", 1)[1]
    refused = client.post(f"/dashboard/segments/{segment}/label", data={"label": "sad", "csrf_token": token})
    assert refused.status_code == 403
    with transaction() as s:
        assert s.get(SegmentLabel, segment) is None
