"""Shared helpers of the live-call tests: a real `callpulse api` (uvicorn) whose log is kept for
inspection, a WebSocket client that streams a call faster than real time, and the test call's
16 kHz samples."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.support import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Api:
    base: str
    log_path: Path

    @property
    def ws(self) -> str:
        return self.base.replace("http://", "ws://")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_api(env: Mapping[str, str] | None = None) -> Iterator[Api]:
    """`callpulse api` on a free loopback port with the suite's CALLPULSE_* settings, logging at
    INFO to a file (the tests read it to check no API key is ever written there)."""
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="callpulse-live-api-")) / "api.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "callpulse.cli", "api", "--port", str(port)],
                                env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"api exited: {log_path.read_text(errors='replace')}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("api did not start within 60 s")
            time.sleep(0.2)
        yield Api(base, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def pcm16(path: Path, rate: int = 16000) -> np.ndarray:
    """A media file's samples as int16 (frames, channels) at ``rate``, decoded by ffmpeg."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-ar", str(rate), "-f", "s16le",
                          "-acodec", "pcm_s16le", "-"], check=True, capture_output=True).stdout
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                            "stream=channels", "-of", "csv=p=0", str(path)],
                           check=True, capture_output=True, text=True).stdout
    return np.frombuffer(out, dtype="<i2").reshape(-1, int(probe.strip()))


@dataclass
class Received:
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    def of(self, event: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("event") == event]


def drain(ws: ClientConnection, into: Received, timeout: float = 0.0) -> None:
    """Read whatever the server has sent, waiting at most ``timeout`` for the first message."""
    wait = timeout
    while True:
        try:
            raw = ws.recv(timeout=wait)
        except TimeoutError:
            return
        except ConnectionClosed as exc:
            into.close_code = exc.rcvd.code if exc.rcvd is not None else None
            raise
        into.messages.append(json.loads(raw))
        wait = 0.0


def read_until_closed(ws: ClientConnection, into: Received, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            drain(ws, into, timeout=1.0)
    except ConnectionClosed:
        return
    raise AssertionError(f"the server did not close the stream within {timeout} s: {into.messages[-3:]}")


def stream(ws: ClientConnection, pcm: np.ndarray, into: Received, chunk_s: float = 0.1,
           speed: float = 10.0, rate: int = 16000) -> None:
    """Binary frames of ``chunk_s`` seconds, ``speed`` times faster than real time, reading the
    server's events in between."""
    step = int(chunk_s * rate)
    for i in range(0, pcm.shape[0], step):
        ws.send(pcm[i: i + step].astype("<i2").tobytes())
        drain(ws, into, timeout=chunk_s / speed)
