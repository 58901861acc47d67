"""Celery signal handlers that feed callpulse/metrics.py: every task's outcome and duration, and
the worker's own /metrics server (started in the main process, before the pool forks, so it
serves the samples of every pool process through PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import os
import time
from typing import Any

from celery.signals import task_postrun, task_prerun, worker_init, worker_process_shutdown

from callpulse import metrics
from callpulse.settings import get_settings

# task id → start time, per process (a prefork child runs one task at a time; threads pools many).
_started: dict[str, float] = {}
# Celery's task states as outcomes: a retry is neither a success nor a failure yet.
OUTCOMES = {"SUCCESS": "success", "FAILURE": "failure", "RETRY": "retry", "REJECTED": "failure",
            "IGNORED": "success"}


@task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


@task_postrun.connect
def _task_finished(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    name = getattr(task, "name", None) or "unknown"
    began = _started.pop(task_id or "", None)
    metrics.TASKS.labels(name, OUTCOMES.get(state or "", "failure")).inc()
    if began is not None:
        metrics.TASK_DURATION.labels(name).observe(time.perf_counter() - began)


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    settings = get_settings()
    if settings.worker_metrics_port:
        metrics.serve(settings.worker_metrics_port, settings.broker_url)


@worker_process_shutdown.connect
def _pool_process_exited(pid: int | None = None, **_: Any) -> None:
    metrics.process_exited(pid or os.getpid())
