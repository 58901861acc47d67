"""Class priors as a per-tenant deployment choice (worker/pipeline/priors.py): the default is the
balanced prior the models were trained with (nothing changes); the `calls` preset shifts scores
toward neutral by a log-prior shift, and every prediction says which preset shaped it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.support import EXAMPLE
from worker.pipeline import priors
from worker.pipeline.contracts import EmotionResult, SegmentInput
from worker.pipeline.fusion import MultimodalModel
from worker.pipeline.labels import CANONICAL_LABELS

ANGRY_ISH = {"neutral": 0.30, "happy": 0.05, "sad": 0.05, "angry": 0.40, "fear": 0.08, "disgust": 0.07,
             "surprise": 0.05}


def test_balanced_changes_nothing_and_calls_leans_neutral() -> None:
    assert priors.shift(ANGRY_ISH, "balanced") == ANGRY_ISH
    calls = priors.shift(ANGRY_ISH, "calls")
    assert sum(calls.values()) == pytest.approx(1.0)
    # p'(c) ∝ p(c)·π(c)/π_train(c): the ratio of two labels moves by the ratio of their priors.
    ratio = (calls["neutral"] / calls["angry"]) / (ANGRY_ISH["neutral"] / ANGRY_ISH["angry"])
    assert ratio == pytest.approx(priors.PRESETS["calls"]["neutral"] / priors.PRESETS["calls"]["angry"])
    assert max(calls, key=calls.__getitem__) == "neutral"
    assert calls["fear"] < ANGRY_ISH["fear"]
    with pytest.raises(ValueError, match="unknown prior preset"):
        priors.shift(ANGRY_ISH, "optimistic")
    assert all(set(p) == set(CANONICAL_LABELS) for p in priors.PRESETS.values())


class _Voice:
    name, version = "voice", "v1"

    def predict(self, batch: list[SegmentInput]) -> list[EmotionResult]:
        return [EmotionResult(label="angry", raw_label="angry", scores=dict(ANGRY_ISH), confidence=0.4,
                              valence=-0.5, arousal=0.7) for _ in batch]


def test_fusion_applies_the_segment_prior_and_says_so() -> None:
    model = MultimodalModel(_Voice(), uncertain_below=0.3)
    seg = SegmentInput(key="s", audio=np.zeros(1600, np.float32), sample_rate=16000, start_s=0.0, end_s=0.1,
                       role="customer")
    plain = model.predict([seg])[0]
    assert plain.label == "angry" and "prior" not in plain.modalities["audio"]
    assert not plain.reasoning_text.endswith("]")
    shifted = model.predict([SegmentInput(**{**seg.__dict__, "prior": "calls"})])[0]
    assert shifted.label == "neutral" and shifted.scores == pytest.approx(priors.shift(ANGRY_ISH, "calls"))
    assert shifted.modalities["audio"]["prior"] == "calls"
    assert shifted.reasoning_text.endswith("[prior: calls]")
    assert shifted.valence is not None and shifted.valence > plain.valence  # type: ignore[operator]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callpulse.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=900)


def test_tenant_setting_and_analyze_option(tmp_path: Path) -> None:
    name = f"prior-{uuid.uuid4().hex[:6]}"
    assert _cli("tenants", "create", name).returncode == 0
    shown = _cli("tenants", "update", name, "--emotion-prior", "calls", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout.splitlines()[-1])["emotion_prior"] == "calls"
    assert _cli("tenants", "update", name, "--emotion-prior", "optimistic").returncode == 2

    env = {"CALLPULSE_DATA_DIR": str(tmp_path / "data"), "CALLPULSE_DATABASE_URL": ""}
    run = _cli("analyze", str(EXAMPLE), "--roles", "agent,customer", "--no-asr", "--emotion-prior", "calls",
               "--format", "json", "--quiet", env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    customer = [s for s in json.loads(run.stdout)["segments"] if s["label"] is not None]
    assert customer and all(s["modalities"]["audio"]["prior"] == "calls" for s in customer)
    assert all(s["reasoning_text"].endswith("[prior: calls]") for s in customer)
