"""Attempt counters in Redis, shared by every API process: failed authentications and dashboard
logins per client address, requests per API key, redeliveries per tenant and per delivery.

Fixed windows (one counter per identity and window, expiring with it) keep each check to one
round trip. Over the limit, the caller answers 429 with Retry-After: the seconds until the window
ends. When Redis cannot be reached the limits are not enforced (logged once a minute): the API
keeps serving, and a Redis outage stops the workers anyway."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache

import redis
from fastapi import HTTPException, status

from callpulse.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "callpulse:rl"
# Redis down, or a limiter URL that is not Redis at all (a broker of another kind): not enforced.
UNAVAILABLE = (redis.RedisError, ValueError)
# After a failure Redis is left alone this long: an unreachable host would otherwise cost every
# request its connect timeout.
RETRY_REDIS_AFTER_S = 5.0
_last_warning = 0.0
_skip_until = 0.0


@dataclass(frozen=True)
class Limit:
    bucket: str  # what is counted ("auth-fail", "login", "key", ...)
    max_count: int  # 0 or less: no limit
    window_s: float


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    # Short timeouts: a limiter that hangs would take the API down with Redis.
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


def _key(limit: Limit, identity: str, window: int) -> str:
    # Hashed: identities are addresses and key ids, which need not sit in Redis in clear.
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32]
    return f"{PREFIX}:{limit.bucket}:{digest}:{window}"


def _unavailable(exc: Exception) -> None:
    global _last_warning, _skip_until
    _skip_until = time.monotonic() + RETRY_REDIS_AFTER_S
    if time.monotonic() - _last_warning > 60:
        _last_warning = time.monotonic()
        log.warning("rate limits not enforced: Redis unavailable (%s)", exc)


def _window(limit: Limit, now: float) -> tuple[int, int]:
    window = int(now // limit.window_s)
    retry_after = max(1, math.ceil((window + 1) * limit.window_s - now))
    return window, retry_after


def exceeded(settings: Settings, limit: Limit, identity: str) -> int | None:
    """Seconds to wait if ``identity`` has used up ``limit`` in this window (counting nothing)."""
    if limit.max_count <= 0 or time.monotonic() < _skip_until:
        return None
    window, retry_after = _window(limit, time.time())
    try:
        raw = _redis(settings.resolved_rate_limit_url).get(_key(limit, identity, window))
    except UNAVAILABLE as exc:
        _unavailable(exc)
        return None
    return retry_after if raw is not None and int(raw) >= limit.max_count else None


def count(settings: Settings, limit: Limit, identity: str) -> int | None:
    """Count one attempt; seconds to wait if this one went over the limit, else None."""
    if limit.max_count <= 0 or time.monotonic() < _skip_until:
        return None
    window, retry_after = _window(limit, time.time())
    key = _key(limit, identity, window)
    try:
        pipe = _redis(settings.resolved_rate_limit_url).pipeline()
        pipe.incr(key)
        pipe.expire(key, math.ceil(limit.window_s) + 1)
        used = int(pipe.execute()[0])
    except UNAVAILABLE as exc:
        _unavailable(exc)
        return None
    return retry_after if used > limit.max_count else None


def too_many(retry_after: int, what: str) -> HTTPException:
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                         detail=f"too many {what}; retry in {retry_after} s",
                         headers={"Retry-After": str(retry_after)})


def auth_failures(settings: Settings) -> Limit:
    return Limit("auth-fail", settings.auth_failures_per_ip, settings.auth_failure_window_s)


def login_attempts(settings: Settings) -> Limit:
    return Limit("login", settings.login_attempts_per_ip, settings.auth_failure_window_s)


def key_requests(settings: Settings) -> Limit:
    return Limit("key", settings.api_requests_per_key_per_minute, 60.0)


def redeliveries_per_tenant(settings: Settings) -> Limit:
    return Limit("redeliver-tenant", settings.webhook_redeliveries_per_minute, 60.0)


def redeliveries_per_delivery(settings: Settings) -> Limit:
    return Limit("redeliver", 1, settings.webhook_redeliver_interval_s)
