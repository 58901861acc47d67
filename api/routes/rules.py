"""/v1/rules: escalation rules (versioned), their versions, and backtests over stored recordings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.deps import SessionDep, SettingsDep, TenantDep
from api.offload import run_bounded, run_bounded_async
from api.schemas import ErrorOut, check_storable
from api.schemas_rules import (
    BacktestFiring,
    BacktestIn,
    BacktestOut,
    Evidence,
    RuleIn,
    RuleList,
    RuleOut,
    RulePatch,
    RuleVersionList,
    RuleVersionOut,
)
from db.models import Rule, RuleVersion
from db.queries import alerts as alerts_q
from db.queries import rules as queries
from worker.rules import RuleDefinition, RuleError, evaluate, parse_definition, trajectory
from worker.rules.language import parse_text_result

router = APIRouter(prefix="/v1/rules", tags=["rules"])

NOT_FOUND = "rule not found"
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
# A real rule is a few hundred bytes; the app-wide limit is sized for audio uploads, far too much
# text to hand to a YAML parser on a request thread.
MAX_RULE_BODY_BYTES = 64 * 1024
# A real rule parses in well under a millisecond; only bigger texts pay for a parser process
# (api/offload.py), where a slow parse cannot hold the GIL against the event loop.
INLINE_PARSE_CHARS = 4096
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked API key"},
    404: {"model": ErrorOut, "description": "No such rule for this tenant"},
}
# The body is read by hand (JSON or YAML), so its schema is declared here for the OpenAPI page.
_RULE_SCHEMA = RuleIn.model_json_schema()
RULE_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _RULE_SCHEMA}, "application/yaml": {"schema": _RULE_SCHEMA}}}}


def _problems(where: tuple[str | int, ...], exc: RuleError) -> RequestValidationError:
    return RequestValidationError([{"loc": (*where, *path), "msg": msg, "type": "rule_invalid"}
                                   for path, msg in exc.problems])


async def _rule_body(request: Request) -> RuleIn:
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type not in ("application/json", *YAML_TYPES):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                            detail="send the rule as application/json or application/yaml")
    too_large = HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                              detail=f"a rule body is limited to {MAX_RULE_BODY_BYTES // 1024} KiB")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RULE_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():  # chunked bodies declare no length: count as they arrive
        body += chunk
        if len(body) > MAX_RULE_BODY_BYTES:
            raise too_large
    text = body.decode("utf-8", errors="replace")
    if len(text) <= INLINE_PARSE_CHARS:
        parsed = parse_text_result(text, content_type)
    else:
        parsed = await run_bounded_async(parse_text_result, text, content_type)
    ok, raw = parsed
    if not ok:
        raise _problems(("body",), RuleError(raw))
    try:
        return RuleIn.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError([
            {"loc": ("body", *err["loc"]), "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]) from exc


# Parsed in a dependency (reading the body is async) so the handlers stay sync and run their
# database work in the thread pool, like every other route.
RuleBody = Annotated[RuleIn, Depends(_rule_body)]


def validated_definition(body: RuleIn) -> tuple[dict[str, Any], RuleDefinition]:
    """Validated definition as stored (a mapping) and as parsed; 422 naming each problem's path."""
    raw: Any = body.definition
    try:
        if isinstance(raw, str):
            ok, raw = (parse_text_result(raw, "application/yaml") if len(raw) <= INLINE_PARSE_CHARS
                       else run_bounded(parse_text_result, raw, "application/yaml"))
            if not ok:
                raise RuleError(raw)
        # Validate first: a valid definition is small and shallow (bounded conditions and depth),
        # so check_storable never walks an arbitrarily large or deep tree.
        parsed = parse_definition(raw)
        try:
            check_storable(raw, "definition")
        except ValueError as exc:
            raise RuleError([((), str(exc))]) from exc
    except RuleError as exc:
        raise _problems(("body", "definition"), exc) from exc
    return raw, parsed


def _tenant_rule(session: Session, tenant_id: uuid.UUID, rule_id: uuid.UUID,
                 for_update: bool = False) -> Rule:
    rule = queries.get_rule(session, tenant_id, rule_id, for_update=for_update)
    if rule is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
    return rule


def _current(session: Session, rule: Rule) -> RuleVersion:
    version = queries.get_version(session, rule.id, rule.current_version)
    assert version is not None, "a rule always has its current version"
    return version


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RuleOut, openapi_extra=RULE_BODY,
             responses={401: ERRORS[401], 415: {"model": ErrorOut}}, summary="Create a rule (version 1)")
def create_rule(session: SessionDep, tenant: TenantDep, body: RuleBody) -> RuleOut:
    raw, parsed = validated_definition(body)
    rule, version = queries.create_rule(session, tenant.id, body.name, body.description, body.enabled, raw,
                                        parsed.severity)
    return RuleOut.build(rule, version)


@router.get("", response_model=RuleList, responses={401: ERRORS[401]}, summary="The tenant's rules")
def list_rules(session: SessionDep, tenant: TenantDep,
               enabled: Annotated[bool | None, Query(description="Only enabled or disabled rules")] = None
               ) -> RuleList:
    return RuleList(items=[RuleOut.build(r, v) for r, v in queries.list_rules(session, tenant.id, enabled)])


@router.get("/{rule_id}", response_model=RuleOut, responses=ERRORS, summary="One rule, current version")
def get_rule(session: SessionDep, tenant: TenantDep, rule_id: uuid.UUID) -> RuleOut:
    rule = _tenant_rule(session, tenant.id, rule_id)
    return RuleOut.build(rule, _current(session, rule))


@router.get("/{rule_id}/versions", response_model=RuleVersionList, responses=ERRORS,
            summary="Every version of a rule, oldest first")
def list_versions(session: SessionDep, tenant: TenantDep, rule_id: uuid.UUID) -> RuleVersionList:
    rule = _tenant_rule(session, tenant.id, rule_id)
    return RuleVersionList(items=[RuleVersionOut.build(v) for v in queries.list_versions(session, rule.id)])


@router.put("/{rule_id}", response_model=RuleOut, openapi_extra=RULE_BODY, responses=ERRORS,
            summary="Replace a rule; a changed definition becomes a new version")
def replace_rule(session: SessionDep, tenant: TenantDep, rule_id: uuid.UUID, body: RuleBody) -> RuleOut:
    raw, parsed = validated_definition(body)
    rule = _tenant_rule(session, tenant.id, rule_id, for_update=True)  # serialises concurrent edits
    version = _current(session, rule)
    if raw != version.definition:
        version = queries.add_version(session, rule, raw, parsed.severity)
    rule.name, rule.description, rule.enabled = body.name, body.description, body.enabled
    session.flush()
    return RuleOut.build(rule, version)


@router.patch("/{rule_id}", response_model=RuleOut, responses=ERRORS,
              summary="Enable, disable or rename a rule (no new version)")
def patch_rule(session: SessionDep, tenant: TenantDep, rule_id: uuid.UUID, body: RulePatch) -> RuleOut:
    rule = _tenant_rule(session, tenant.id, rule_id, for_update=True)
    for field in ("name", "description", "enabled"):
        value = getattr(body, field)
        if value is not None:
            setattr(rule, field, value)
    session.flush()
    return RuleOut.build(rule, _current(session, rule))


@router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS,
               summary="Delete a rule (its alerts stay, naming the version that fired)")
def delete_rule(session: SessionDep, tenant: TenantDep, rule_id: uuid.UUID) -> Response:
    queries.delete_rule(_tenant_rule(session, tenant.id, rule_id, for_update=True))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{rule_id}/backtest", response_model=BacktestOut, responses=ERRORS,
             summary="What the rule would have fired on stored recordings; creates nothing")
def backtest(session: SessionDep, tenant: TenantDep, settings: SettingsDep, rule_id: uuid.UUID,
             body: BacktestIn) -> BacktestOut:
    rule = _tenant_rule(session, tenant.id, rule_id)
    version = queries.get_version(session, rule.id, body.version or rule.current_version)
    if version is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"rule has no version {body.version}")
    try:
        definition = parse_definition(version.definition)
    except RuleError as exc:  # stored before a language limit existed: say so, do not 500
        raise _problems(("path", "rule_id"), exc) from exc
    limit = settings.backtest_max_recordings
    firings, evaluated, truncated = replay(session, tenant.id, definition, version.severity,
                                           body.created_from, body.created_to, limit)
    # Only reads: no alert is stored and no event is published.
    return BacktestOut(rule_id=rule.id, rule_version=version.version, recordings_evaluated=evaluated,
                       truncated=truncated, firings=firings)


def replay(session: Session, tenant_id: uuid.UUID, definition: RuleDefinition, severity: str,
           created_from: datetime, created_to: datetime, limit: int
           ) -> tuple[list[BacktestFiring], int, bool]:
    """What ``definition`` fires on the tenant's recordings created in [from, to) (at most
    ``limit``, newest first): the firings, how many recordings were evaluated, whether more
    matched. Shared by the backtest endpoint and the dashboard's rule editor (unsaved rules)."""
    recordings = alerts_q.recordings_in_range(session, tenant_id, created_from, created_to, limit + 1)
    firings: list[BacktestFiring] = []
    for rec in recordings[:limit]:
        # The very function live evaluation runs, on the trajectory live evaluation would load.
        for f in evaluate(definition, trajectory.load(session, rec.id)):
            firings.append(BacktestFiring(
                recording_id=rec.id, external_id=rec.external_id, recording_status=rec.status,
                window_key=f.window_key, severity=severity, fired_at_s=f.fired_at_s,
                first_segment_index=f.first_segment_index, last_segment_index=f.last_segment_index,
                start_s=f.start_s, end_s=f.end_s, evidence=[Evidence.model_validate(e) for e in f.evidence],
            ))
    return firings, min(len(recordings), limit), len(recordings) > limit
