"""The install scripts wait for the package manager's lock instead of failing (a fresh machine's
unattended upgrades hold it for minutes), and give up after a bound with apt-get's reason.
A stand-in apt-get on PATH plays the busy package manager; the real one is never run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "apt-get-wait.sh"
LOCKED = ("E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 "
          "(unattended-upgr)\nE: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), "
          "is another process using it?")


def _fake_apt(tmp_path: Path, busy_runs: int, final: str = "ok") -> Path:
    """apt-get that reports the lock held for its first ``busy_runs`` calls, then succeeds (or
    fails with another error); it logs each call's arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "apt-get"
    fake.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
n=$(wc -l < {calls})
if [ "$n" -le {busy_runs} ]; then printf '%s\\n' "{LOCKED}" >&2; exit 100; fi
if [ "{final}" = ok ]; then echo "installed"; exit 0; fi
echo "E: Unable to locate package nosuchpkg" >&2; exit 100
""")
    fake.chmod(0o755)
    return bin_dir


def _run(tmp_path: Path, bin_dir: Path, wait_s: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLPULSE_APT_LOCK_WAIT_S": wait_s,
           "CALLPULSE_APT_LOCK_POLL_S": "0.2"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_waits_for_the_lock_then_installs(tmp_path: Path) -> None:
    bin_dir = _fake_apt(tmp_path, busy_runs=3)
    run = _run(tmp_path, bin_dir, "30", "install", "-y", "ffmpeg")
    assert run.returncode == 0, run.stderr
    assert "waiting for another package manager" in run.stderr
    assert (tmp_path / "calls").read_text().splitlines() == ["install -y ffmpeg"] * 4


def test_gives_up_after_the_bound_with_the_reason(tmp_path: Path) -> None:
    bin_dir = _fake_apt(tmp_path, busy_runs=10_000)
    run = _run(tmp_path, bin_dir, "1", "update")
    assert run.returncode == 100
    assert "Could not get lock" in run.stderr and "still held after 1 s" in run.stderr


def test_other_failures_are_not_retried(tmp_path: Path) -> None:
    bin_dir = _fake_apt(tmp_path, busy_runs=0, final="missing")
    run = _run(tmp_path, bin_dir, "30", "install", "-y", "nosuchpkg")
    assert run.returncode == 100 and "Unable to locate package" in run.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == 1


def test_install_scripts_use_it() -> None:
    for name in ("ensure-system.sh", "ensure-chromium.sh"):
        text = (ROOT / "scripts" / name).read_text()
        assert "apt-get-wait.sh" in text and "$SUDO apt-get" not in text, name
