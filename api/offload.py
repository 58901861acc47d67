"""CPU-heavy request work (parsing rules and transcripts) in separate processes, with bounds.

Pure-Python parsing holds the GIL: on a request thread it slows every other thread, the event loop
included, and one 60 KB YAML body froze /healthz for seconds. Each job here runs in its own child
process (forked from a forkserver that has the parsers imported, so a start costs milliseconds) at
a lower CPU priority than the server, at most CALLPULSE_PARSE_WORKERS at a time; a job waits at
most CALLPULSE_PARSE_TIMEOUT_S for a slot (then 503 with Retry-After) and may use as many seconds
of CPU (then the kernel ends it and the request gets a 422 saying so). The functions sent here
return plain data, errors included (a tagged tuple), because exception objects do not always
survive pickling.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import resource
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar, cast

from anyio import to_thread
from fastapi import HTTPException, status

from callpulse.settings import get_settings

log = logging.getLogger(__name__)

T = TypeVar("T")
_PRELOAD = ["worker.rules.language", "api.transcript_upload"]
PARSER_NICENESS = 10
WALL_FACTOR = 10

_lock = threading.Lock()
_slots: threading.BoundedSemaphore | None = None
_context: Any = None


def _setup() -> tuple[threading.BoundedSemaphore, Any]:
    global _slots, _context
    with _lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(max(1, get_settings().parse_workers))
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(_PRELOAD)
        return _slots, _context


def _child(conn: Connection, cpu_s: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    # Serving requests comes first: a parser only gets the CPU the API process leaves.
    os.nice(PARSER_NICENESS)
    # The parse budget is CPU time, which a busy host does not eat into; the kernel ends the
    # process (SIGXCPU) when it is spent.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as exc:  # reported, never raised across the pipe
        conn.send(("crash", f"{type(exc).__name__}: {exc}"[:300]))
    finally:
        conn.close()


def run_bounded(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a child process; blocks this thread (never the event loop) until done."""
    slots, context = _setup()
    timeout = get_settings().parse_timeout_s
    if not slots.acquire(timeout=timeout):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail="the server is busy parsing other requests; retry shortly",
                            headers={"Retry-After": str(max(1, int(timeout)))})
    try:
        receiver, sender = context.Pipe(duplex=False)
        cpu_s = max(1, math.ceil(timeout))
        proc = context.Process(target=_child, args=(sender, cpu_s, fn, args), daemon=True)
        proc.start()
        sender.close()
        too_long = HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                 detail=f"the request needs more than {cpu_s} s of CPU to parse")
        try:
            # Wall time only guards against a child that waits on nothing while holding a slot.
            if not receiver.poll(timeout * WALL_FACTOR):
                raise too_long
            outcome, value = receiver.recv()
        except EOFError as exc:  # the child died before answering: out of CPU time, or killed
            proc.join(5)
            if proc.exitcode == -signal.SIGXCPU:
                raise too_long from exc
            log.warning("parser process exited with %s", proc.exitcode)
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                detail="the request could not be parsed within the server's limits") from exc
        finally:
            receiver.close()
            if proc.is_alive():
                proc.kill()
            proc.join()
    finally:
        slots.release()
    if outcome != "ok":
        raise RuntimeError(f"parser process failed: {value}")
    return cast(T, value)


async def run_bounded_async(fn: Callable[..., T], *args: Any) -> T:
    """The same, awaited from an async route: the wait happens on a worker thread."""
    return await to_thread.run_sync(lambda: run_bounded(fn, *args))
