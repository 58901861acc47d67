"""Leases on running work: how the sweep tells work whose worker died from work that is only
waiting in a queue. A task claims a lease per recording when it starts (its own small transaction),
a thread of the worker process renews every lease the process holds while the task runs, and the
lease is deleted when the task ends. A worker killed with -9 (all of it, so Redis keeps its message
unacked for the visibility timeout) stops renewing: its leases run out within `lease_ttl_s`, and the
next sweep re-drives exactly those recordings. Queued work has no lease and is never touched.

Releasing is best effort: with the database down the lease simply runs out, and the sweep re-drives
the work once the database is back (at most one duplicate, which the idempotent stages absorb)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from celery.exceptions import SoftTimeLimitExceeded

from callpulse.settings import get_settings

log = logging.getLogger(__name__)

# This worker process tree's incarnation: children forked by the pool inherit it, a restarted
# worker gets a new one (and ends the old one's leases, worker/jobs/reconnect.py).
BOOT = uuid.uuid4().hex

_held: dict[uuid.UUID, int] = {}
_lock = threading.Lock()
_thread: threading.Thread | None = None
_thread_pid: int | None = None


def node_name(hostname: str | None) -> str:
    import socket

    return (hostname or f"celery@{socket.gethostname()}")[:255]


@contextmanager
def held(stage: str, recording_ids: Iterable[uuid.UUID], hostname: str | None) -> Iterator[None]:
    """Hold a lease on each recording while the body runs."""
    from db.queries import recovery as q
    from db.session import transaction

    settings = get_settings()
    lease_ids: list[uuid.UUID] = []
    try:
        with transaction() as s:
            lease_ids = q.claim(s, recording_ids, stage, node_name(hostname), BOOT, settings.lease_ttl_s)
    except SoftTimeLimitExceeded:
        raise  # the task's time is up (swallowed here, the body would run on with no limit left)
    except Exception:
        # The database is down: the stage itself will fail and retry; nothing to hold.
        log.debug("could not claim leases for %s", stage, exc_info=True)
    _register(lease_ids)
    try:
        yield
    finally:
        _unregister(lease_ids)
        try:
            with transaction() as s:
                q.release(s, lease_ids)
        except Exception:
            log.warning("could not release the %s leases (database unavailable); they run out in %.0f s",
                        stage, settings.lease_ttl_s)


def api_node() -> str:
    """Who holds an API process's leases (live calls): its own name, never a worker's, so a worker
    starting on the same host does not end them as its predecessor's; the pid, so each API process
    on a host is told apart (a restarted one has a new pid: its old leases simply run out)."""
    import os
    import socket

    return f"api@{socket.gethostname()}:{os.getpid()}"[:255]


def claim_for(stage: str, recording_id: uuid.UUID, node: str) -> list[uuid.UUID]:
    """Claim a lease outside a task (an API process streaming a live call) and keep renewing it
    until ``release_for``: when the process dies, the lease runs out and the sweep finishes the
    call from what reached the disk."""
    from db.queries import recovery as q
    from db.session import transaction

    with transaction() as s:
        lease_ids = q.claim(s, [recording_id], stage, node, BOOT, get_settings().lease_ttl_s)
    _register(lease_ids)
    return lease_ids


def release_for(lease_ids: Iterable[uuid.UUID], delete: bool) -> None:
    """Stop renewing; ``delete`` ends the leases now, otherwise they run out (and the sweep takes
    over the work, e.g. a live call that could not be finished here)."""
    from db.queries import recovery as q
    from db.session import transaction

    ids = list(lease_ids)
    _unregister(ids)
    if delete and ids:
        try:
            with transaction() as s:
                q.release(s, ids)
        except Exception:
            log.warning("could not release %d leases (database unavailable); they run out", len(ids))


def _register(lease_ids: list[uuid.UUID]) -> None:
    global _thread, _thread_pid
    import os

    with _lock:
        for lease_id in lease_ids:
            _held[lease_id] = _held.get(lease_id, 0) + 1
        # A forked pool child inherits the dict but not the parent's thread: start its own.
        if lease_ids and (_thread is None or _thread_pid != os.getpid() or not _thread.is_alive()):
            _thread = threading.Thread(target=_heartbeat, name="callpulse-lease-heartbeat", daemon=True)
            _thread_pid = os.getpid()
            _thread.start()


def _unregister(lease_ids: list[uuid.UUID]) -> None:
    with _lock:
        for lease_id in lease_ids:
            _held.pop(lease_id, None)


def held_now() -> list[uuid.UUID]:
    with _lock:
        return list(_held)


def _heartbeat() -> None:
    from db.queries import recovery as q
    from db.session import transaction

    settings = get_settings()
    stop = threading.Event()
    failing = False
    while not stop.wait(settings.lease_heartbeat_s):
        lease_ids = held_now()
        if not lease_ids:
            continue
        try:
            with transaction() as s:
                q.renew(s, lease_ids, settings.lease_ttl_s)
            failing = False
        except Exception:
            if not failing:  # one line per outage, not one per beat
                log.warning("could not renew %d leases (database unavailable); retrying quietly",
                            len(lease_ids))
            failing = True
