"""Webhook mechanics: Standard Webhooks signing, the SSRF guard, and one HTTP attempt with httpx.

Signing follows the Standard Webhooks spec (https://www.standardwebhooks.com): the secret is
``whsec_`` + base64 of random bytes; ``webhook-signature`` is ``v1,`` + base64 of HMAC-SHA256,
keyed with the base64-decoded secret, over ``{webhook-id}.{webhook-timestamp}.{body}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
# Cloud instance-metadata services: refused even where private targets are allowed, because a
# credential leak from them is never what a webhook is for.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254",
))
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog"})
EXCERPT_CHARS = 500


class TargetRefused(ValueError):
    """The URL is not a target we send to (scheme, unresolvable, or a refused address)."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    mac = hmac.new(_key(secret), f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signed_headers(secret: str, message_id: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    # A fresh timestamp per attempt (receivers reject stale ones); the id stays the same for dedupe.
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "user-agent": "CallPulse-Webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, message_id, ts, body),
    }


def verify(secret: str, headers: Mapping[str, str], body: str, tolerance_s: float = 300.0) -> bool:
    """What a receiver does (used by the tests): any listed v1 signature valid, timestamp fresh."""
    try:
        message_id, ts = headers["webhook-id"], int(headers["webhook-timestamp"])
        offered = headers["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > tolerance_s:
        return False
    expected = sign(secret, message_id, ts, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


def retry_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff after the ``attempt``-th failure, capped, with up to 10 % jitter so a
    receiver coming back is not hit by every delayed retry at the same instant."""
    delay = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    return delay * (1 + random.random() * 0.1)


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    host: str
    addresses: tuple[str, ...]


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_multicast or ip.is_unspecified:
        return "not a unicast address"
    if allow_private:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if not ip.is_global:  # private ranges, CGNAT, documentation, reserved …
        return "a private or reserved address"
    return None


def resolve_target(url: str, allow_private: bool) -> Target:
    """Parse, resolve and check every address the host resolves to (a name with one public and one
    private address is refused). Delivery then connects to a checked address, not to a fresh
    lookup, so DNS cannot be re-pointed between the check and the connection."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise TargetRefused("the URL must be http(s) with a host")
    host = parsed.host.lower().rstrip(".")
    if host in METADATA_HOSTS:
        raise TargetRefused(f"{host} is a cloud metadata host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"cannot resolve {host}: {exc}") from exc
    addresses = tuple(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    if not addresses:
        raise TargetRefused(f"{host} resolves to no address")
    for address in addresses:
        reason = _refusal(ipaddress.ip_address(address), allow_private)
        if reason:
            raise TargetRefused(f"{host} resolves to {address}, {reason}; webhook targets must be public")
    return Target(url=parsed, host=host, addresses=addresses)


@dataclass(frozen=True)
class AttemptResult:
    ok: bool
    status_code: int | None
    error: str | None
    excerpt: str
    duration_ms: float


def send(target: Target, headers: Mapping[str, str], body: str, timeout_s: float) -> AttemptResult:
    """One POST to the first checked address, with the original Host (and TLS name); no redirects:
    a redirect could lead anywhere the guard never saw."""
    address = target.addresses[0]
    pinned = target.url.copy_with(host=address)
    host_header = target.url.netloc.decode("ascii").rsplit("@", 1)[-1]
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    started = time.perf_counter()
    try:
        # trust_env=False: a proxy from the environment would connect somewhere the guard never checked.
        with httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                          trust_env=False) as client:
            response = client.post(pinned, content=body.encode("utf-8"),
                                   headers={**headers, "host": host_header}, extensions=extensions)
            excerpt = response.text[:EXCERPT_CHARS]
    except httpx.HTTPError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return AttemptResult(False, None, f"{type(exc).__name__}: {exc}"[:500], "", elapsed)
    elapsed = (time.perf_counter() - started) * 1000
    if 200 <= response.status_code < 300:
        return AttemptResult(True, response.status_code, None, excerpt, elapsed)
    return AttemptResult(False, response.status_code, f"receiver answered HTTP {response.status_code}",
                         excerpt, elapsed)
