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
import logging
import random
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import httpx

log = logging.getLogger(__name__)

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


class TargetUnresolved(TargetRefused):
    """The host did not resolve. Still a refusal at endpoint creation, but at delivery a retryable
    failure: DNS may be down only for now (EAI_AGAIN), unlike a policy refusal, which stays true."""


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
    return cast(float, delay * (1 + random.random() * 0.1))


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    host: str
    addresses: tuple[str, ...]


# NAT64 prefixes (RFC 6052 well-known, RFC 8215 local-use): the gateway forwards to the IPv4 address
# in the low 32 bits, so 64:ff9b::7f00:1 reaches 127.0.0.1.
NAT64_NETWORKS = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address leads to (6to4, Teredo, NAT64, IPv4-compatible): Python calls
    most of these forms global, so without this 2002:7f00:1:: would pass as a public address."""
    embedded = []
    if ip.sixtofour is not None:
        embedded.append(ip.sixtofour)
    if ip.teredo is not None:
        embedded.extend(ip.teredo)  # (server, client): both are checked
    if any(ip in net for net in NAT64_NETWORKS) or ip in IPV4_COMPATIBLE:
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return embedded


def refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> str | None:
    """Why ``ip`` is not a webhook target, or None; pure, no DNS."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        else:
            # The embedded IPv4 gets the same rules, metadata included even where private is allowed.
            for inner in _embedded_ipv4(ip):
                reason = refusal(inner, allow_private)
                if reason:
                    return f"{reason} ({inner} embedded in {ip})"
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


def not_public(host: str) -> str:
    return (f"{host} is not a public address; webhook targets must be public "
            "(CALLPULSE_WEBHOOK_ALLOW_PRIVATE_TARGETS=true allows private ones, for a trusted internal "
            "network only)")


def resolve_target(url: str, allow_private: bool) -> Target:
    """Parse, resolve and check every address the host resolves to (a name with one public and one
    private address is refused). Delivery then connects to a checked address, not to a fresh
    lookup, so DNS cannot be re-pointed between the check and the connection."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from exc
    try:
        # .host decodes IDNA lazily and raises for a malformed A-label such as http://xn--/.
        raw_host = parsed.host
    except UnicodeError as exc:  # idna.IDNAError is a UnicodeError
        raise TargetRefused(f"not a valid host name: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not raw_host:
        raise TargetRefused("the URL must be http(s) with a host")
    host = raw_host.lower().rstrip(".")
    if host in METADATA_HOSTS:
        raise TargetRefused(not_public(host))
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # the name itself cannot be encoded: no retry will fix that
        raise TargetRefused(f"not a valid host name {host}: {exc}") from exc
    except socket.gaierror as exc:
        raise TargetUnresolved(f"cannot resolve {host}: {exc}") from exc
    addresses = tuple(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    if not addresses:
        raise TargetUnresolved(f"{host} resolves to no address")
    for address in addresses:
        reason = refusal(ipaddress.ip_address(address), allow_private)
        if reason:
            # The caller learns only that the target is not public: naming the address (or its
            # kind) would map the internal network one endpoint at a time. The log keeps it.
            log.info("webhook target %s refused: resolves to %s, %s", host, address, reason)
            raise TargetRefused(not_public(host))
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
    a redirect could lead anywhere the guard never saw.

    ``timeout_s`` bounds the whole attempt, not only each read: httpx's timeout applies per
    connect/write/read, so a receiver dripping one byte at a time would otherwise hold a worker
    indefinitely (and outlive the delivery lease, so the sweep re-sends alongside). The body is
    streamed and only the excerpt is read, so a huge answer is never held in memory."""
    address = target.addresses[0]
    pinned = target.url.copy_with(host=address)
    host_header = target.url.netloc.decode("ascii").rsplit("@", 1)[-1]
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    started = time.perf_counter()
    deadline = started + timeout_s
    status_code: int | None = None
    chunks: list[bytes] = []
    try:
        # trust_env=False: a proxy from the environment would connect somewhere the guard never checked.
        with (
            httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False) as client,
            client.stream("POST", pinned, content=body.encode("utf-8"),
                          headers={**headers, "host": host_header}, extensions=extensions) as response,
        ):
            # Connect, request and headers are each bounded by httpx's per-phase timeout; a complete
            # answer that arrived is kept even if late, since re-sending it would only duplicate.
            status_code = response.status_code
            wanted = EXCERPT_CHARS * 4  # enough UTF-8 bytes for EXCERPT_CHARS characters
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                wanted -= len(chunk)
                if wanted <= 0:
                    break  # the rest is never read: closing the stream drops the connection
                if time.perf_counter() > deadline:
                    raise TimeoutError
    except (httpx.TimeoutException, TimeoutError) as exc:
        elapsed = (time.perf_counter() - started) * 1000
        detail = f" ({type(exc).__name__})" if isinstance(exc, httpx.TimeoutException) else ""
        error = f"timeout: no complete answer within {timeout_s:g} s{detail}"
        return AttemptResult(False, status_code, error, _excerpt(chunks), elapsed)
    except httpx.HTTPError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        return AttemptResult(False, status_code, f"{type(exc).__name__}: {exc}"[:500], "", elapsed)
    elapsed = (time.perf_counter() - started) * 1000
    excerpt = _excerpt(chunks)
    assert status_code is not None
    if 200 <= status_code < 300:
        return AttemptResult(True, status_code, None, excerpt, elapsed)
    return AttemptResult(False, status_code, f"receiver answered HTTP {status_code}", excerpt, elapsed)


def _excerpt(chunks: list[bytes]) -> str:
    # errors="replace": the cut may fall inside a multi-byte character, or the body is not UTF-8.
    return b"".join(chunks).decode("utf-8", errors="replace")[:EXCERPT_CHARS]
