"""The dashboard's signing secret and HMAC-signed tokens (the session cookie, the login form's
pre-session CSRF cookie). Kept apart so the session and CSRF modules share it without importing
each other."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from functools import lru_cache
from pathlib import Path

from callpulse.settings import Settings

log = logging.getLogger(__name__)

SECRET_FILE = "session-secret"


@lru_cache
def _stored_secret(data_dir: Path) -> str:
    """A secret generated once per data directory, so it survives restarts and is shared by the
    workers of one host without anyone having configured it."""
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another worker process may have created it a moment ago and not written it yet.
        for _ in range(50):
            if stored := path.read_text().strip():
                return stored
            time.sleep(0.02)
        raise RuntimeError(f"{path} is empty: delete it or set CALLPULSE_SESSION_SECRET") from None
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48))
    log.warning("CALLPULSE_SESSION_SECRET is not set: dashboard cookies are signed with a generated "
                "secret kept in %s; set the variable when several hosts serve the dashboard", path)
    return path.read_text().strip()


def session_secret(settings: Settings) -> bytes:
    return (settings.session_secret or _stored_secret(settings.data_dir)).encode("utf-8")


def _sign(value: str, secret: bytes, purpose: str) -> str:
    # The purpose keeps a token signed for one cookie from being accepted as the other.
    mac = hmac.new(secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def sign_token(token: str, secret: bytes, purpose: str = "session") -> str:
    return f"{token}.{_sign(token, secret, purpose)}"


def unsign_token(cookie: str, secret: bytes, purpose: str = "session") -> str | None:
    """The token of a cookie we signed; None for anything else."""
    token, _, signature = cookie.rpartition(".")
    try:
        if token and hmac.compare_digest(signature.encode("ascii"), _sign(token, secret, purpose).encode()):
            return token
    except UnicodeError:  # a cookie with non-ASCII characters was not written by us
        pass
    return None
