"""Every state-changing dashboard route uses the one CSRF dependency (api.csrf.CsrfCheck), and every
form the dashboard renders with method="post" carries the token field. A new route or form that
forgets it fails here before it ships."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.csrf import CsrfCheck
from api.dashboard_auth import live_tenant, page_tenant

TEMPLATES = Path(__file__).resolve().parents[2] / "api" / "templates"
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def _calls(dependant: Dependant) -> list[object]:
    found: list[object] = []
    for dep in dependant.dependencies:
        found.append(dep.call)
        found.extend(_calls(dep))
    return found


def _all_routes() -> list[Any]:
    """Every endpoint with its full path, methods and dependant (router-level dependencies
    included). FastAPI keeps included routers as branches that resolve their routes lazily."""
    from api.main import create_app

    found: list[Any] = []
    for route in create_app().routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "effective_route_contexts"):
            # WebSocket routes (/v1/live) have no dependant here; they authenticate by API key.
            found.extend(c for c in route.effective_route_contexts() if c.dependant is not None)
    return found


def _dashboard_routes() -> list[Any]:
    routes = []
    for route in _all_routes():
        calls = _calls(route.dependant)
        cookie_session = any(c in (page_tenant, live_tenant) or isinstance(c, CsrfCheck) for c in calls)
        if route.path.startswith("/dashboard") or cookie_session:
            routes.append(route)
    return routes


def test_every_state_changing_dashboard_route_checks_csrf() -> None:
    assert len(_all_routes()) > 30  # the walk reaches the API's routes too, not only a few
    changing = [r for r in _dashboard_routes() if set(r.methods) & STATE_CHANGING]
    paths = {r.path for r in changing}
    assert {"/dashboard/login", "/dashboard/logout", "/dashboard/upload"} <= paths  # the scan sees them
    missing = [f"{sorted(r.methods)} {r.path}" for r in changing
               if not any(isinstance(c, CsrfCheck) for c in _calls(r.dependant))]
    assert missing == [], f"dashboard routes without the CSRF dependency: {missing}"


def test_read_only_dashboard_routes_change_nothing() -> None:
    # GET routes must stay safe: the CSRF check only guards the other methods.
    for route in _dashboard_routes():
        if not set(route.methods) & STATE_CHANGING:
            assert set(route.methods) <= {"GET", "HEAD"}, route.path


def test_every_post_form_in_the_templates_carries_the_token() -> None:
    forms = 0
    for template in sorted(TEMPLATES.glob("*.html")):
        text = template.read_text()
        for match in re.finditer(r"<form\b[^>]*>(.*?)</form>", text, re.S | re.I):
            if not re.search(r'method="post"', match.group(0)[:300], re.I):
                continue
            forms += 1
            assert "csrf_field(request)" in match.group(1), f"{template.name}: a POST form without csrf_field"
    assert forms >= 3
