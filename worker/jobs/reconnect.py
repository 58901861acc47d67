"""Sweeping at once instead of on the next tick: when a worker connects to the broker (at start and
after every reconnect) it ends its dead predecessor's leases and sends a sweep, so the work a
killed worker held, the messages kept in the outbox during an outage and the queues a broker lost
are re-driven within seconds of the service being back. A broker restart that lost its data is
recognised by a marker key it no longer has (with AOF persistence, the recommended deployment,
the marker and the queues survive, and only expired leases are re-driven).

Also: a sweep while Postgres or the broker is down logs one WARNING line per outage and waits for
the next tick, instead of a traceback every interval."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, bootsteps

from callpulse.settings import get_settings
from worker.jobs import lease, names, outbox

log = logging.getLogger(__name__)

EPOCH_KEY = "callpulse:broker-epoch"
_unavailable = False


def broker_lost_queues(broker_url: str) -> bool:
    """True exactly once after the broker lost its data (the first sweep to notice sets the
    marker again). A broker other than Redis is assumed to keep its queues."""
    if not broker_url.startswith(("redis://", "rediss://")):
        return False
    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return bool(client.set(EPOCH_KEY, lease.BOOT, nx=True))
    finally:
        client.close()


def forget_epoch(broker_url: str) -> None:
    """Undo the marker when the sweep that noticed the loss could not run, so the next one does."""
    import redis

    try:
        client = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
        client.delete(EPOCH_KEY)
        client.close()
    except Exception:
        log.warning("could not reset the broker marker; unfinished work waits for the backstop sweep")


def sweep_now(reconnect: bool = False) -> None:
    """One sweep: the outbox first (its messages are older), then dead workers' and lost work."""
    global _unavailable
    from worker.jobs.enqueue import enqueue
    from worker.jobs.retry import is_transient
    from worker.stages import sweep

    settings = get_settings()
    lost = False
    try:
        lost = broker_lost_queues(settings.broker_url)
        if lost:
            log.warning("the broker lost its queues (restart without persistence): re-driving every "
                        "unfinished recording no worker holds")
        outbox.drain(settings.outbox_batch)
        enqueue(sweep.sweep(settings, broker_lost=lost))
    except Exception as exc:
        if lost:
            forget_epoch(settings.broker_url)
        if not is_transient(exc):
            raise
        if not _unavailable:
            log.warning("sweep skipped: %s unavailable (%s); retrying every %.0f s quietly",
                        "database" if "sqlalchemy" in type(exc).__module__ else "broker",
                        type(exc).__name__, settings.sweep_interval_s)
        _unavailable = True
        return
    if _unavailable or reconnect:
        log.warning("sweep ran%s", " after reconnecting to the broker" if reconnect else
                    " again: the database and broker are back")
    _unavailable = False


def _on_connect(app: Celery, hostname: str) -> None:
    from db.queries import recovery as q
    from db.session import transaction

    try:
        with transaction() as s:
            ended = q.end_previous_incarnations(s, lease.node_name(hostname), lease.BOOT)
        if ended:
            log.warning("ended %d leases of this worker's previous run; their work is re-driven", ended)
    except Exception:
        log.warning("could not end the previous run's leases (database unavailable); they run out")
    try:
        app.send_task(names.SWEEP.name, kwargs={"reconnect": True}, retry_policy=outbox.PUBLISH_RETRY)
    except Exception:
        log.warning("could not send the reconnect sweep; beat sends the next one")


class SweepOnConnect(bootsteps.StartStopStep):  # type: ignore[misc]  # Celery ships no types
    """A consumer step: Celery starts the consumer's steps again after every broker reconnect."""

    requires = frozenset({"celery.worker.consumer.tasks:Tasks"})

    def start(self, parent: Any) -> None:
        # Off the consumer's thread: the database may be slow or down, and the consumer must not wait.
        threading.Thread(target=_on_connect, args=(parent.app, parent.hostname),
                         name="callpulse-sweep-on-connect", daemon=True).start()
