"""A 20 MB request header against the API server, side by side: `callpulse api` (headers bounded
by CALLPULSE_MAX_HEADER_BYTES) and plain `uvicorn api.main:app` (httptools, no bound), each a
real server process on loopback with a scratch SQLite database.

For each: how many bytes the server took in before it answered (or stopped reading), the time to
that point, what it answered, and /healthz latency on a second connection while the header was
being sent. Prints a table and the ratios.

    python bench/bench_header_limit.py [--mb 20]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 65536


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(command: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{command} did not start")


def _attack(port: int, total: int) -> tuple[int, float, str]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHUNK)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    start = time.perf_counter()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent, answer = 0, "no answer"
    try:
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break
            sock.sendall(b"a" * CHUNK)
            sent += CHUNK
        sock.settimeout(5)
        first = sock.recv(200)
        answer = first.split(b"\r\n")[0].decode() or "closed"
    except TimeoutError:
        answer = "no answer (still waiting for the header's end)"
    except OSError as exc:
        answer = f"connection error {exc.errno}"
    elapsed = time.perf_counter() - start
    sock.close()
    return sent, elapsed, answer


def _healthz_during(port: int, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            t = time.perf_counter()
            client.get(f"http://127.0.0.1:{port}/healthz")
            out.append(time.perf_counter() - t)
            time.sleep(0.05)


def run(mb: int) -> dict[str, dict[str, object]]:
    scratch = Path(tempfile.mkdtemp(prefix="callpulse-bench-hdr-"))
    env = {**os.environ, "CALLPULSE_DATABASE_URL": f"sqlite:///{scratch / 'bench.db'}",
           "CALLPULSE_DATA_DIR": str(scratch), "CALLPULSE_SESSION_SECRET": "bench"}
    subprocess.run([sys.executable, "-m", "callpulse.cli", "migrate"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    results: dict[str, dict[str, object]] = {}
    servers = {
        "callpulse api (bounded)": lambda p: [sys.executable, "-m", "callpulse.cli", "api",
                                              "--port", str(p)],
        "plain uvicorn (httptools)": lambda p: [sys.executable, "-m", "uvicorn", "api.main:app",
                                                "--port", str(p)],
    }
    for name, command in servers.items():
        port = _free_port()
        proc = _start(command(port), port, env)
        try:
            latencies: list[float] = []
            stop = threading.Event()
            probe = threading.Thread(target=_healthz_during, args=(port, stop, latencies))
            probe.start()
            sent, elapsed, answer = _attack(port, mb * 1024 * 1024)
            stop.set()
            probe.join()
            # Over before the first /healthz answer: nothing to report for it.
            health = (f"{1000 * statistics.median(latencies):.1f}/{1000 * max(latencies):.1f}"
                      if latencies else "–")
            results[name] = {"taken_bytes": sent, "seconds": elapsed, "answer": answer, "healthz": health}
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=20, help="header size to send (MB)")
    args = parser.parse_args()
    results = run(args.mb)
    print(f"{'server':28} {'taken':>10} {'time ms':>9} {'healthz med/max ms':>20}  answer")
    for name, r in results.items():
        ms = 1000 * float(r["seconds"])  # type: ignore[arg-type]
        print(f"{name:28} {r['taken_bytes']:>10} {ms:>9.1f} {r['healthz']:>20}  {r['answer']}")
    bounded, plain = results["callpulse api (bounded)"], results["plain uvicorn (httptools)"]
    taken = float(plain["taken_bytes"]) / max(1.0, float(bounded["taken_bytes"]))  # type: ignore[arg-type]
    print(f"bytes the server took in, plain ÷ bounded: {taken:.0f}×")


if __name__ == "__main__":
    main()
