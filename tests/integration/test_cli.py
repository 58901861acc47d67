"""The `callpulse` command as integrators' scripts call it: its stdout is a contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from db.queries.tenants import tenant_for_key
from db.session import transaction
from tests.support import EXAMPLE


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callpulse.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def test_tenant_and_key_are_printed_alone_on_the_last_line() -> None:
    name = f"acme-{uuid.uuid4().hex[:6]}"
    created = _cli("tenants", "create", name)
    assert created.returncode == 0, created.stderr
    tenant_id = uuid.UUID(created.stdout.strip().splitlines()[-1])

    dup = _cli("tenants", "create", name)
    assert dup.returncode == 1 and "already exists" in dup.stderr

    key_run = _cli("keys", "create", "--tenant", name)
    assert key_run.returncode == 0, key_run.stderr
    key = key_run.stdout.strip().splitlines()[-1]
    with transaction() as s:
        tenant = tenant_for_key(s, key)
        assert tenant is not None and tenant.id == tenant_id

    assert _cli("keys", "create", "--tenant", "no-such-tenant").returncode == 1


def test_analyze_json_lines_embedded_mode(tmp_path: Path) -> None:
    """No servers: a SQLite file, several files in one call, one JSON object per input on stdout."""
    bad = tmp_path / "noise.mp3"
    bad.write_bytes(os.urandom(2048))
    mono = tmp_path / "mono.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(EXAMPLE), "-ac", "1", str(mono)], check=True)
    env = {"CALLPULSE_DATA_DIR": str(tmp_path / "data"), "CALLPULSE_DATABASE_URL": ""}
    run = _cli("analyze", str(EXAMPLE), str(mono), str(bad), "--roles", "agent,customer", "--format", "json",
               env=env)
    assert run.returncode == 1, run.stderr  # one input failed: the exit code says so
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [Path(r["file"]).name for r in lines] == ["demo_call.ogg", "mono.flac", "noise.mp3"]
    assert (tmp_path / "data" / "callpulse.db").exists()

    stereo, mono_result, failed = lines
    assert stereo["status"] == "done" and 35 < stereo["duration_s"] < 37
    # Conversation measures come with every call, in JSON and as the table's summary block.
    talk = stereo["conversation"]["talk"]
    assert set(talk) == {"agent", "customer"} and all(t["seconds"] > 3 for t in talk.values())
    from callpulse.local import format_table

    table = format_table(stereo)
    assert "   talk: agent" in table and "interruptions: 0" in table
    assert "customer sentiment (−5..+5)" in table
    roles = {s["role"] for s in stereo["segments"]}
    assert roles == {"agent", "customer"}
    for seg in stereo["segments"]:
        for field in ("start_s", "end_s", "role", "label", "scores", "valence", "arousal", "confidence",
                      "reasoning"):
            assert field in seg
        if seg["role"] == "customer":
            assert seg["label"] is not None and seg["reasoning"]
            assert {"start_s", "end_s", "modality", "cue", "text"} <= set(seg["reasoning"][0])
        else:
            assert seg["label"] is None and seg["skip_reason"]
    # A mono file under a two-role --roles: its one speaker is "unknown", analyzed by default.
    assert {s["role"] for s in mono_result["segments"]} == {"unknown"}
    assert all(s["label"] for s in mono_result["segments"])
    assert failed["status"] == "failed" and "not decodable" in failed["error"]
    assert "progress" not in run.stdout and "[1/3]" in run.stderr


def test_analyze_table_and_help() -> None:
    helptext = _cli("analyze", "--help").stdout
    for option in ("--roles", "--format", "--analyze-roles", "--backend", "--model-path"):
        assert option in helptext
    missing = _cli("analyze", "/no/such/file.wav")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_analyze_with_a_transcript(tmp_path: Path) -> None:
    """The customer's words (channel 1 of the example) reach the output and the text model."""
    vtt = tmp_path / "call.vtt"
    cues = "".join(f"\n{t // 60:02d}:{t % 60:02d}.000 --> {t // 60:02d}:{t % 60:02d}.900\n"
                   f"<v customer>I am really upset, this is the third time I call\n" for t in range(0, 34, 3))
    vtt.write_text("WEBVTT\n" + cues)
    env = {"CALLPULSE_DATA_DIR": str(tmp_path / "data"), "CALLPULSE_DATABASE_URL": ""}
    run = _cli("analyze", str(EXAMPLE), "--roles", "agent,customer", "--transcript", str(vtt), "--format",
               "json", env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    customer = [s for s in result["segments"] if s["role"] == "customer"]
    assert customer and all(s["words"] and "text" in s["modalities"] for s in customer)
    assert all(s["reasoning_text"].startswith("Customer, ") for s in customer)
    # "customer" is channel 1's role: the agent's segments get none of these words.
    assert all(not s["words"] for s in result["segments"] if s["role"] == "agent")

    late = tmp_path / "late.vtt"
    late.write_text("WEBVTT\n\n01:00.000 --> 01:30.000\ntoo late\n")
    bad = _cli("analyze", str(EXAMPLE), "--transcript", str(late), "--format", "json", env=env)
    assert bad.returncode == 1 and "after the end of the recording" in json.loads(bad.stdout)["error"]
    two = _cli("analyze", str(EXAMPLE), str(EXAMPLE), "--transcript", str(vtt), env=env)
    assert two.returncode == 2 and "exactly one FILE" in two.stderr


def test_train_for_a_tenant_needs_its_own_output_directory() -> None:
    run = _cli("train", "--tenant", "acme", "--ship-only", "--ravdess", "r", "--emodb", "e")
    assert run.returncode == 2 and "--tenant needs --out DIR" in run.stderr
    helptext = _cli("train", "--help").stdout
    assert "--tenant NAME" in helptext and "--corrections" in helptext and "--ship-only" in helptext


def test_train_without_the_train_extra_says_which_extra(tmp_path: Path) -> None:
    """The runtime install has no scikit-learn: `callpulse train` names the extra instead of a
    traceback. Run in an interpreter where importing sklearn fails, as on a runtime-only install."""
    code = ("import sys; sys.modules['sklearn'] = None; from callpulse.cli import main; "
            f"sys.exit(main(['train', '--ravdess', '{tmp_path}', '--emodb', '{tmp_path}']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "pip install 'callpulse[train]'" in run.stderr
