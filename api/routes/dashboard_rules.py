"""/dashboard/rules: the escalation rules in the browser: the list (enable/disable), a YAML/JSON
editor for a new or an existing rule with the API's own validation messages next to the field they
concern, a backtest of the text in the editor (saved or not) over a chosen period, and a rule's
versions.

Saving runs the handlers of POST /v1/rules and PUT /v1/rules/{id}; the backtest runs the very
replay of POST /v1/rules/{id}/backtest, so what the editor shows is what the API would answer."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.dashboard_auth import CsrfSessionDep, PageTenantDep, WriterTenantDep
from api.deps import SessionDep, SettingsDep
from api.routes import rules as rules_api
from api.routes.dashboard import _message, _page
from api.schemas_rules import EXAMPLE_DEFINITION, RuleIn, RulePatch
from db.models import Rule, Tenant
from db.queries import rules as queries

router = APIRouter(prefix="/dashboard", tags=["dashboard"], include_in_schema=False)

BACKTEST_DAYS = 7
MAX_SHOWN_FIRINGS = 100


def _yaml(definition: dict[str, Any]) -> str:
    return yaml.safe_dump(definition, sort_keys=False, allow_unicode=True)


def _problems(errors: list[Any]) -> dict[str, list[str]]:
    """Validation errors by form field: name, description or definition (with the path inside it)."""
    out: dict[str, list[str]] = {}
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        field = loc[0] if loc and loc[0] in ("name", "description", "definition") else "definition"
        inner = ".".join(loc[1:]) if loc and loc[0] == field else ".".join(loc)
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        out.setdefault(field, []).append(f"{inner}: {msg}" if inner else msg)
    return out


def _editor(request: Request, session: Session, tenant: Tenant, rule: Rule | None, form: dict[str, Any],
            errors: dict[str, list[str]] | None = None, backtest: dict[str, Any] | None = None,
            saved: int | None = None, code: int = 200, attempt: str = "saved") -> HTMLResponse:
    versions = queries.list_versions(session, rule.id) if rule is not None else []
    return _page(request, "rule_edit.html", {
        "tenant_name": tenant.name, "nav": "rules", "rule": rule, "form": form, "errors": errors or {},
        "backtest": backtest, "saved": saved, "attempt": attempt,
        "versions": [(v, _yaml(v.definition)) for v in reversed(versions)],
    }, code)


def _default_period() -> tuple[str, str]:
    today = datetime.now(UTC).date()
    return (today - timedelta(days=BACKTEST_DAYS - 1)).isoformat(), today.isoformat()


@router.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request, session: SessionDep, tenant: PageTenantDep) -> HTMLResponse:
    return _page(request, "rules.html", {"tenant_name": tenant.name, "nav": "rules",
                                         "rules": queries.list_rules(session, tenant.id)})


@router.get("/rules/new", response_class=HTMLResponse)
def new_rule(request: Request, session: SessionDep, tenant: PageTenantDep) -> HTMLResponse:
    start, end = _default_period()
    form = {"name": "", "description": "", "enabled": True, "definition": _yaml(EXAMPLE_DEFINITION),
            "from": start, "to": end}
    return _editor(request, session, tenant, None, form)


def _tenant_rule(session: Session, tenant: Tenant, rule_id: uuid.UUID) -> Rule:
    rule = queries.get_rule(session, tenant.id, rule_id)
    if rule is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=rules_api.NOT_FOUND)
    return rule


@router.get("/rules/{rule_id}", response_class=HTMLResponse)
def edit_rule(request: Request, session: SessionDep, tenant: PageTenantDep, rule_id: uuid.UUID,
              saved: int | None = None) -> HTMLResponse:
    rule = queries.get_rule(session, tenant.id, rule_id)
    if rule is None:
        return _message(request, "Rule not found", "There is no such rule for your tenant.",
                        status.HTTP_404_NOT_FOUND, tenant.name)
    version = queries.get_version(session, rule.id, rule.current_version)
    start, end = _default_period()
    form = {"name": rule.name, "description": rule.description, "enabled": rule.enabled,
            "definition": _yaml(version.definition) if version else "", "from": start, "to": end}
    return _editor(request, session, tenant, rule, form, saved=saved)


UNPROCESSABLE = status.HTTP_422_UNPROCESSABLE_CONTENT
Definition = Annotated[str, Form(max_length=rules_api.MAX_RULE_BODY_BYTES)]


def editor_form(
    name: Annotated[str, Form(max_length=400)] = "",
    description: Annotated[str, Form(max_length=4000)] = "",
    enabled: Annotated[str | None, Form(max_length=8)] = None,
    definition: Definition = "",
    rule_id: Annotated[str, Form(max_length=40)] = "",
    start: Annotated[str, Form(alias="from", max_length=10)] = "",
    end: Annotated[str, Form(alias="to", max_length=10)] = "",
) -> dict[str, Any]:
    """The editor's fields as typed (a checkbox is sent only when ticked)."""
    return {"rule_id": rule_id, "name": name, "description": description, "enabled": enabled is not None,
            "definition": definition, "from": start, "to": end}


EditorForm = Annotated[dict[str, Any], Depends(editor_form)]


def _rule_of_form(session: Session, tenant: Tenant, rule_id: str) -> Rule | None:
    try:
        return _tenant_rule(session, tenant, uuid.UUID(rule_id)) if rule_id else None
    except ValueError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=rules_api.NOT_FOUND) from exc


def _body(form: dict[str, Any]) -> RuleIn:
    return RuleIn(name=form["name"].strip(), description=form["description"], enabled=form["enabled"],
                  definition=form["definition"])


def _refused(exc: ValidationError | RequestValidationError) -> dict[str, list[str]]:
    if isinstance(exc, ValidationError):
        return _problems(list(exc.errors(include_url=False, include_input=False)))
    return _problems(list(exc.errors()))


@router.post("/rules/save", response_class=HTMLResponse)
def save_rule(request: Request, session: SessionDep, tenant: WriterTenantDep, form: EditorForm) -> Response:
    """Create (no rule_id) or replace a rule; on refusal the editor comes back with each message
    next to its field and the text as typed."""
    rule = _rule_of_form(session, tenant, form["rule_id"])
    try:
        body = _body(form)
        out = (rules_api.replace_rule(session, tenant, rule.id, body) if rule is not None
               else rules_api.create_rule(session, tenant, body))
    except (ValidationError, RequestValidationError) as exc:
        return _editor(request, session, tenant, rule, form, _refused(exc), code=UNPROCESSABLE)
    return RedirectResponse(f"/dashboard/rules/{out.id}?saved={out.version}", status.HTTP_303_SEE_OTHER)


def _period(form: dict[str, Any]) -> tuple[datetime, datetime] | str:
    """[from, to) of the chosen days (UTC), or why they are not a period."""
    try:
        first, last = date.fromisoformat(form["from"]), date.fromisoformat(form["to"])
    except ValueError:
        return "choose the first and the last day of the period (YYYY-MM-DD)"
    if last < first:
        return "the period ends before it starts"
    midnight = datetime.min.time()
    return (datetime.combine(first, midnight, tzinfo=UTC),
            datetime.combine(last + timedelta(days=1), midnight, tzinfo=UTC))


@router.post("/rules/backtest", response_class=HTMLResponse)
def backtest_rule(request: Request, session: SessionDep, checked: CsrfSessionDep, settings: SettingsDep,
                  form: EditorForm) -> Response:
    """What the text in the editor would fire on the calls created in the chosen days; stores
    nothing, so read-only sessions may try rules too."""
    tenant = checked.tenant
    rule = _rule_of_form(session, tenant, form["rule_id"])
    period = _period(form)
    if isinstance(period, str):
        return _editor(request, session, tenant, rule, form, {"period": [period]}, code=UNPROCESSABLE,
                       attempt="tried")
    try:
        # A name is not needed to try a rule out.
        _, parsed = rules_api.validated_definition(_body({**form, "name": form["name"] or "(unsaved)"}))
    except (ValidationError, RequestValidationError) as exc:
        return _editor(request, session, tenant, rule, form, _refused(exc), code=UNPROCESSABLE,
                       attempt="tried")
    firings, evaluated, truncated = rules_api.replay(session, tenant.id, parsed, parsed.severity, *period,
                                                     settings.backtest_max_recordings)
    result = {"firings": firings[:MAX_SHOWN_FIRINGS], "count": len(firings), "evaluated": evaluated,
              "truncated": truncated, "calls": len({f.recording_id for f in firings}),
              "severity": parsed.severity}
    return _editor(request, session, tenant, rule, form, backtest=result)


@router.post("/rules/{rule_id}/enabled")
def set_enabled(session: SessionDep, tenant: WriterTenantDep, rule_id: uuid.UUID,
                enabled: Annotated[str, Form(pattern="^(true|false)$")]) -> Response:
    """Enable or disable a rule from the list (no new version), as PATCH /v1/rules/{id} does."""
    rules_api.patch_rule(session, tenant, rule_id, RulePatch(enabled=enabled == "true"))
    return RedirectResponse(f"/dashboard/rules#rule-{rule_id}", status.HTTP_303_SEE_OTHER)


@router.post("/rules/{rule_id}/delete", response_class=HTMLResponse)
def delete_rule(request: Request, session: SessionDep, tenant: WriterTenantDep,
                rule_id: uuid.UUID) -> Response:
    """Delete a rule from its editor, as DELETE /v1/rules/{id} does (its alerts stay)."""
    try:
        rules_api.delete_rule(session, tenant, rule_id)
    except HTTPException as exc:
        return _message(request, "Not deleted", str(exc.detail), exc.status_code, tenant.name)
    return RedirectResponse("/dashboard/rules", status.HTTP_303_SEE_OTHER)
