"""The Celery app: queues, routing and reliability settings. Tasks live in one module per queue
beside it (worker/jobs/ingest.py, asr.py, infer.py, rules.py, notify.py)."""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_process_shutdown
from kombu.entity import Exchange, Queue

from callpulse.settings import get_settings
from worker.jobs import names

log = logging.getLogger(__name__)

# Queues and routing come from the one declaration of every task (names.py).
QUEUES = names.QUEUES
TASK_ROUTES = names.TASK_ROUTES


def make_celery() -> Celery:
    settings = get_settings()
    # One module of tasks per queue, named after it.
    app = Celery("callpulse", broker=settings.broker_url,
                 include=[f"worker.jobs.{queue}" for queue in QUEUES])
    exchange = Exchange("callpulse", type="direct")
    app.conf.update(
        task_queues=[Queue(name, exchange, routing_key=name) for name in QUEUES],
        task_default_queue="ingest",
        task_default_exchange="callpulse",
        task_default_routing_key="ingest",
        task_routes=TASK_ROUTES,
        task_serializer="json",
        accept_content=["json"],
        # At-least-once: ack after the task ran; a worker killed mid-task gives the message back.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Small prefetch so a long inference batch does not hoard messages other workers could run.
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        # Redis redelivers unacked messages after this: longer than any task may run (its hard
        # time limit), so a message is redelivered only when its worker really died.
        broker_transport_options={
            "visibility_timeout": max(3600.0, names.longest_hard_limit_s(settings) + 300)},
        beat_schedule={
            "sweep-stuck-recordings": {
                "task": names.SWEEP.name,
                "schedule": settings.sweep_interval_s,
            },
            # Per-tenant retention of media and derived data (worker/stages/retention.py).
            "apply-retention": {
                "task": names.RETENTION.name,
                "schedule": settings.retention_interval_s,
            },
            # Orphan media folders and decoded caches of final calls (worker/stages/media_sweep.py).
            "sweep-media": {
                "task": names.SWEEP_MEDIA.name,
                "schedule": settings.media_sweep_interval_s,
            },
            # Webhook retries whose delayed message was lost (worker/jobs/notify.py).
            "sweep-overdue-webhook-deliveries": {
                "task": names.SWEEP_DELIVERIES.name,
                "schedule": settings.sweep_interval_s,
            },
        },
        timezone="UTC",
    )
    return app


app = make_celery()

# A sweep at once whenever a worker connects to the broker (worker/jobs/reconnect.py).
from worker.jobs.reconnect import SweepOnConnect  # noqa: E402

app.steps["consumer"].add(SweepOnConnect)

# Task outcomes and durations, and the worker's /metrics server (connected on import).
from worker.jobs import metrics  # noqa: E402,F401

# Which models a worker process loads follows its queues: only infer runs the emotion model (it
# alone knows the model version), ingest needs the VAD; a rules/notify worker stays small.
_consumes: frozenset[str] = frozenset(QUEUES)


@worker_init.connect
def _note_queues(sender: object = None, **_: object) -> None:
    """Runs in the worker's main process before the pool forks, so children inherit the set."""
    global _consumes
    consume_from = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    _consumes = frozenset(getattr(consume_from, "consume_from", None) or QUEUES)


@worker_process_init.connect
def _warm_up(**_: object) -> None:
    """Load models once per worker process, before the first task, so latency is predictable."""
    if not _consumes & {"ingest", "infer"}:
        return
    from worker import runtime

    if "infer" in _consumes:
        settings = get_settings()
        runtime.emotion_model(settings)
        if settings.asr_enabled and settings.live_asr_enabled:
            # Live calls' words are heard by the infer worker (worker/stages/live_words.py): a live
            # call's first turn should not wait for the recogniser to load.
            from worker.pipeline.speech.asr import AsrUnavailable

            try:
                runtime.asr_model(settings)
            except AsrUnavailable as exc:
                log.error("live calls will have no words: the ASR model did not load (%s)", exc)
    if "ingest" in _consumes:
        runtime.vad_model()


@worker_process_shutdown.connect
def _release(**_: object) -> None:
    from worker import runtime

    runtime.release()
