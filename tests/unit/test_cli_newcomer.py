"""What a new user of `callpulse analyze` reads: --roles in either form, a summary block per call,
the policy sentence once, no library warnings on a fresh database, speed in unmistakable words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from callpulse.cli import parse_roles
from callpulse.local import speed_phrase
from tests.support import EXAMPLE


def test_roles_accept_the_list_and_the_api_form() -> None:
    assert parse_roles("agent,customer") == {0: "agent", 1: "customer"}
    assert parse_roles("0=agent,1=customer") == {0: "agent", 1: "customer"}
    assert parse_roles(" 1=Customer , 0=agent ") == {0: "agent", 1: "customer"}
    for bad in ("0=agent,2=customer", "x=agent", "0=", "0=agent,customer"):
        with pytest.raises(ValueError):
            parse_roles(bad)


def test_speed_is_phrased_as_faster_or_slower() -> None:
    assert speed_phrase(36.0, 9.0).endswith("4.0× faster than real time")
    slow = speed_phrase(1.0, 2.0)
    assert "2.0× slower than real time" in slow and "short" in slow
    assert "x real time" not in speed_phrase(36.0, 9.0)


def test_table_has_a_summary_and_the_policy_once(tmp_path: Path) -> None:
    env = {**os.environ, "CALLPULSE_DATA_DIR": str(tmp_path / "fresh"), "CALLPULSE_DATABASE_URL": ""}
    run = subprocess.run([sys.executable, "-m", "callpulse.cli", "analyze", str(EXAMPLE), "--roles",
                          "0=agent,1=customer"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    # The API's form named the channels: the agent is skipped by policy, the customer analyzed.
    assert "\n   customer: 3 segments; " in out and "start " in out and "worst moment " in out
    assert "\n   agent: 3 segments; 3 not analyzed [1]" in out
    assert out.count("AI Act") == 1 and "not analyzed [1]\n" in out
    # A fresh SQLite database: no SQLAlchemy warnings for the new user to puzzle over.
    assert "Warning" not in run.stderr, run.stderr
    assert "faster than real time" in run.stderr and "models loaded in" in run.stderr

    bad = subprocess.run([sys.executable, "-m", "callpulse.cli", "analyze", str(EXAMPLE), "--roles",
                          "0=agent,3=customer"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "name every channel from 0" in bad.stderr
