"""Who is calling, for rate limits and logs: the socket's peer address, unless that peer is one of
our own reverse proxies (CALLPULSE_TRUSTED_PROXIES), in which case the nearest X-Forwarded-For hop
that is not one of them. Anyone else can write any X-Forwarded-For, so it is never read from them:
trusting it from everywhere would let a client pick a fresh address for every guess."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from starlette.requests import HTTPConnection

from callpulse.settings import Settings

Network = IPv4Network | IPv6Network


@lru_cache(maxsize=16)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ip_network(entry, strict=False) for entry in entries)


def is_trusted_proxy(address: str, settings: Settings) -> bool:
    try:
        ip = ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in _networks(tuple(settings.trusted_proxies)))


def client_ip_trusted_proxy(conn: HTTPConnection, settings: Settings) -> bool:
    """Whether the socket's peer is one of our configured proxies."""
    return conn.client is not None and is_trusted_proxy(conn.client.host, settings)


def client_ip(conn: HTTPConnection, settings: Settings) -> str:
    peer = conn.client.host if conn.client is not None else ""
    if not is_trusted_proxy(peer, settings):
        return peer
    hops = [hop.strip() for header in conn.headers.getlist("x-forwarded-for")
            for hop in header.split(",") if hop.strip()]
    # Each proxy appends the address it received from: walk back from the nearest one past our own.
    for hop in reversed(hops):
        if not is_trusted_proxy(hop, settings):
            return hop[:64]
    return hops[0][:64] if hops else peer
