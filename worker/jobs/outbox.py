"""Sending task messages without losing them when the broker is down. `send` publishes; if the
broker refuses (down, restarting), the message is stored in Postgres (`outbox_message`) instead and
`drain` sends it once the broker is back: every sweep drains, and so does the sweep a worker runs
as soon as it reconnects to the broker (worker/jobs/reconnect.py). A follow-up is therefore never
lost between its commit and the broker, and an upload during an outage waits seconds after the
broker returns, not for a timeout. Free of the pipeline's imports: the API sends through it too."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from worker.jobs import names

log = logging.getLogger(__name__)

# Publishing gives up quickly while the broker is down (the outbox holds the message), instead of
# kombu's default of retrying for seconds inside an API request or a task.
_broker_down = False
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.2, "interval_max": 0.5}


def _app(app: Celery | None) -> Celery:
    if app is not None:
        return app
    from worker.jobs.app import app as default

    return default


def send(task: str, args: list[Any], countdown: float | None = None, app: Celery | None = None) -> bool:
    """Publish now, or keep it in the outbox. True when published. Raises only when both the broker
    and the database are down (the caller's retry, or the lease running out, covers that)."""
    global _broker_down
    try:
        _app(app).send_task(task, args=args, countdown=countdown, retry_policy=PUBLISH_RETRY)
    except SoftTimeLimitExceeded:
        raise  # the task's time is up, not the broker's: the task records that
    except Exception as exc:
        _broker_down = True
        keep(task, args, countdown, exc)
        return False
    _after_publish(app)
    return True


def _after_publish(app: Celery | None) -> None:
    global _broker_down
    if _broker_down:
        # This process (the API, say) sees the broker back: sweep now rather than on the next
        # tick, so what it kept in the outbox meanwhile goes out at once.
        _broker_down = False
        try:
            _app(app).send_task(names.SWEEP.name, kwargs={"reconnect": True}, retry_policy=PUBLISH_RETRY)
        except Exception:
            log.debug("could not send the reconnect sweep", exc_info=True)


# The error text of a message written before its publish (``stage``): nothing has refused it yet.
STAGED = "staged before the commit; sent after it"


def stage(session: Any, task: str, args: list[Any]) -> uuid.UUID:
    """Write the message in the caller's transaction, before its commit. Where no lease covers the
    work (an upload: the API holds none), a process killed between its commit and its publish
    would otherwise leave a row nothing sends on but the slow backstop; staged, the next sweep
    sends it. After the commit, ``send_staged`` publishes it and removes the copy."""
    from db.queries import recovery as q

    return q.add_message(session, task, args, None, STAGED)


def send_staged(msg_id: uuid.UUID, task: str, args: list[Any], app: Celery | None = None) -> bool:
    """Publish a staged message now and remove its outbox copy; when the broker refuses, the copy
    stays for the sweep. A sweep that sends the copy first only adds a duplicate message, which the
    idempotent stages absorb. True when published."""
    from db.queries import recovery as q
    from db.session import transaction

    global _broker_down
    try:
        _app(app).send_task(task, args=args, retry_policy=PUBLISH_RETRY)
    except Exception:
        _broker_down = True
        log.warning("broker unavailable: %s%s kept in the outbox until it is back", task, args)
        return False
    try:
        with transaction() as s:
            q.delete_message(s, msg_id)
    except Exception:
        log.warning("could not remove the outbox copy of %s%s; a sweep sends it again (harmless)", task,
                    args)
    _after_publish(app)
    return True


def keep(task: str, args: list[Any], countdown: float | None, exc: BaseException | None) -> None:
    from db.queries import recovery as q
    from db.session import transaction

    with transaction() as s:
        q.add_message(s, task, args, countdown, f"{type(exc).__name__}: {exc}"[:500] if exc else None)
    log.warning("broker unavailable: %s%s kept in the outbox until it is back", task, args)


def drain(limit: int = 500, app: Celery | None = None) -> int:
    """Send what the outbox holds, oldest first; stop at the first refusal (the broker is still
    down). Each message is deleted in the transaction that sent it; a crash between the publish
    and the commit sends it twice, which the idempotent stages absorb. Returns how many were sent."""
    from db.queries import recovery as q
    from db.session import transaction

    sent = 0
    with transaction() as s:
        for msg in q.lock_messages(s, limit):
            try:
                _app(app).send_task(msg.task, args=list(msg.args), countdown=msg.countdown_s,
                                    retry_policy=PUBLISH_RETRY)
            except Exception as exc:
                msg.error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("outbox: broker still unavailable, %s stays queued", msg.task)
                break
            s.delete(msg)
            sent += 1
    if sent:
        log.warning("outbox: sent %d messages kept while the broker was unavailable", sent)
    return sent
