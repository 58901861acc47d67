"""Probes for orchestrators: /healthz says the process serves requests, /readyz that it can work."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response, status
from sqlalchemy import text

from api.schemas import ComponentCheck, Readiness
from db.session import get_engine
from worker.jobs.app import app as celery_app

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

PROBE_TIMEOUT_S = 2


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    # Deliberately touches nothing else: a database outage must not get healthy API pods restarted.
    # Answered on the event loop itself, so a thread pool busy with slow requests cannot delay it.
    return {"status": "ok"}


def _failed(component: str, exc: Exception) -> ComponentCheck:
    # The probe is unauthenticated: the full error (hosts, users) goes to the log, not the body.
    log.warning("readiness: %s unreachable", component, exc_info=exc)
    return ComponentCheck(ok=False, detail=type(exc).__name__)


def _check_database() -> ComponentCheck:
    # The engine request sessions use, so "ready" means the API's own pool can reach Postgres.
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return _failed("database", exc)
    return ComponentCheck(ok=True)


def _check_broker() -> ComponentCheck:
    # The Celery app's own connection settings: the broker that uploads are actually enqueued on.
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                   timeout=PROBE_TIMEOUT_S)
    except Exception as exc:
        return _failed("broker", exc)
    return ComponentCheck(ok=True)


@router.get("/readyz", response_model=Readiness, summary="Readiness: database and broker reachable",
            responses={503: {"model": Readiness, "description": "A dependency is unreachable"}})
def readyz(response: Response) -> Readiness:
    # Own connections instead of SessionDep: a dead database must give a 503 body, not an error.
    checks = {"database": _check_database(), "broker": _check_broker()}
    ready = all(check.ok for check in checks.values())
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(status="ready" if ready else "unavailable", checks=checks)
