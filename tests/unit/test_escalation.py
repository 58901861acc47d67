"""What a new user tries first: a stereo 8 kHz μ-law call (espeak-ng + sox, made at test time by
tests/escalation_call.py) where the customer goes neutral → complaining → furious → thankful, run
through `callpulse analyze` with default settings (so our ASR gives the words). The furious turns
must come out angry (or negative with angry in the top two), the thankful one positive, and the calm
opening must not raise a false alarm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests import escalation_call


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[Any]]:
    assert escalation_call.tools_available(), "espeak-ng and sox are needed: make test-system"
    work = tmp_path_factory.mktemp("escalation")
    call = work / "call.wav"
    turns = escalation_call.build(call)
    env = {k: v for k, v in os.environ.items() if k != "CALLPULSE_ASR_ENABLED"}  # the defaults
    env.update({"CALLPULSE_DATA_DIR": str(work / "data"), "CALLPULSE_DATABASE_URL": ""})
    run = subprocess.run([sys.executable, "-m", "callpulse.cli", "analyze", str(call), "--roles",
                          "agent,customer", "--format", "json", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout), turns


def _segments_of(result: dict[str, Any], turn: Any) -> list[dict[str, Any]]:
    """Customer segments that lie mostly inside the turn."""
    out = []
    for seg in result["segments"]:
        overlap = min(seg["end_s"], turn.end_s) - max(seg["start_s"], turn.start_s)
        if seg["channel"] == turn.turn.channel and overlap > 0.5 * (seg["end_s"] - seg["start_s"]):
            out.append(seg)
    return out


def _top_two(seg: dict[str, Any]) -> list[str]:
    return sorted(seg["scores"], key=lambda k: -seg["scores"][k])[:2]


def test_call_format_is_a_contact_centre_recording(analyzed: tuple[dict[str, Any], list[Any]]) -> None:
    result, turns = analyzed
    assert result["status"] == "done" and result["transcript_source"] == "asr" and result["language"] == "en"
    assert abs(result["duration_s"] - (turns[-1].end_s + escalation_call.GAP_S)) < 1.5


def test_furious_turns_are_angry_thankful_positive(analyzed: tuple[dict[str, Any], list[Any]]) -> None:
    result, turns = analyzed
    by_mood: dict[str, list[dict[str, Any]]] = {}
    for turn in turns:
        if turn.turn.channel == 1:
            by_mood.setdefault(turn.turn.mood, []).extend(_segments_of(result, turn))
    assert by_mood["furious"] and by_mood["thankful"] and by_mood["neutral"]
    for seg in by_mood["furious"]:
        assert seg["label"] == "angry" or (seg["valence"] < 0 and "angry" in _top_two(seg)), seg
        # The words that drove it are quoted with their times, inside the segment.
        quoted = [e for e in seg["reasoning"] if e["modality"] == "text" and e["cue"] == "words"]
        assert quoted and all(seg["start_s"] <= e["start_s"] <= seg["end_s"] for e in quoted)
        assert "words '" in seg["reasoning_text"]
    for seg in by_mood["thankful"]:
        assert seg["valence"] > 0 and seg["label"] in ("happy", "neutral", "surprise"), seg
    for seg in by_mood["neutral"]:
        assert seg["label"] != "angry", seg
    # Agents' words are transcribed; their emotion is not analyzed under the default policy.
    agent = [s for s in result["segments"] if s["role"] == "agent"]
    assert agent and all(s["words"] and s["label"] is None for s in agent)
