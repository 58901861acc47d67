"""`callpulse adapt --base EMOTION2VEC_DIR`: the head of a tiny random emotion2vec release (with a
head, and the headless self-supervised kind) is adapted to a LABELS.csv on its utterance embedding;
the encoder is copied unchanged, the output is a release the `emotion2vec` backend loads strictly.

Synthetic "callers" (angry turns higher and louder than neutral ones): the tests check the code
path, the frozen parts and the refusals, not accuracy (a random encoder has none to show)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from callpulse import cli
from tests.backend_checkpoints import speech_segments
from tests.funasr_checkpoints import build_emotion2vec
from worker.pipeline.voice.registry import load_backend

RATE = 16_000


def _turn(angry: bool, seed: int, seconds: float = 1.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = (240.0 if angry else 120.0) * (1.0 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    voice = sum(np.sin(k * 2 * np.pi * np.cumsum(f0) / RATE) / k for k in range(1, 6))
    return ((0.35 if angry else 0.08) * voice + rng.normal(0, 0.01, t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three callers, six angry and six neutral turns in all (plus one lone 'sad')."""
    root = tmp_path_factory.mktemp("e2v-labels")
    rows = []
    for caller in range(3):
        plan = ["angry", "neutral"] * 2 + (["sad"] if caller == 0 else [])
        audio = np.concatenate([_turn(lab == "angry", 10 * caller + i) for i, lab in enumerate(plan)])
        soundfile.write(root / f"caller{caller}.wav", audio, RATE)
        rows += [
            {
                "file": f"caller{caller}.wav",
                "label": "anger" if lab == "angry" else lab,
                "start_s": 1.5 * i,
                "end_s": 1.5 * (i + 1),
                "speaker": f"c{caller}",
            }
            for i, lab in enumerate(plan)
        ]
    path = root / "labels.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "start_s", "end_s", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_head_is_adapted_and_encoder_frozen(labels_csv: Path, tmp_path: Path, capsys) -> None:
    base = build_emotion2vec(tmp_path / "emotion2vec_plus_tiny")
    out = tmp_path / "adapted"
    assert cli.main(["adapt", "--labels", str(labels_csv), "--out", str(out), "--base", str(base)]) == 0
    printed = capsys.readouterr()
    assert "held-out estimate (3 folds, grouped, 3 speaker/file groups, 13 labels" in printed.out
    assert "encoder frozen" in printed.out and "'sad' keeps the base head's answer" in printed.err

    before = torch.load(base / "model.pt", weights_only=True)
    after = torch.load(out / "model.pt", weights_only=True)
    assert set(before) == set(after)
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("proj."))
    classes = (out / "tokens.txt").read_text().split()
    assert classes == [
        "angry",
        "disgusted",
        "fearful",
        "happy",
        "neutral",
        "other",
        "sad",
        "surprised",
        "unknown",
    ]
    changed = [
        c for i, c in enumerate(classes) if not torch.equal(before["proj.weight"][i], after["proj.weight"][i])
    ]
    assert changed == ["angry", "neutral"]  # the classes with 5 labels; the rest keep the base rows
    report = json.loads((out / "adaptation.json").read_text())
    assert report["labels"] == {"angry": 6, "neutral": 6, "sad": 1} and report["encoder"] == "frozen"
    assert set(report["held_out"]) >= {"base", "adapted"}

    model = load_backend("emotion2vec", out, "cpu", "auto")
    original = load_backend("emotion2vec", base, "cpu", "auto")
    assert model.version != original.version and model.version.startswith("adapted@")
    segments = speech_segments(2)
    assert [r.scores for r in model.predict(segments)] != [r.scores for r in original.predict(segments)]


def test_headless_encoder_gets_a_head_over_labelled_classes(labels_csv: Path, tmp_path: Path, capsys) -> None:
    base = build_emotion2vec(tmp_path / "emotion2vec_base", head=False)
    out = tmp_path / "new-head"
    assert cli.main(["adapt", "--labels", str(labels_csv), "--out", str(out), "--base", str(base)]) == 0
    assert "no emotion head (the encoder alone)" in capsys.readouterr().out
    tokens = (out / "tokens.txt").read_text().split()
    assert [t for t in tokens if not t.startswith("unuse_")] == ["angry", "neutral"]
    model = load_backend("emotion2vec", out, "cpu", "auto")
    for result in model.predict(speech_segments(2)):
        assert result.raw_label in ("angry", "neutral")
        assert result.scores["angry"] + result.scores["neutral"] == pytest.approx(1.0)


def test_too_few_labels_and_unknown_labels_are_refused(labels_csv: Path, tmp_path: Path, capsys) -> None:
    base = build_emotion2vec(tmp_path / "emotion2vec_base", head=False)
    few = tmp_path / "few.csv"
    lines = labels_csv.read_text().splitlines()
    few.write_text("\n".join(lines[:6]) + "\n")  # 3 angry, 2 neutral
    for row in lines[1:6]:
        assert row.split(",")[0].startswith("caller0")
    (tmp_path / "caller0.wav").symlink_to(labels_csv.parent / "caller0.wav")
    assert cli.main(["adapt", "--labels", str(few), "--out", str(tmp_path / "m"), "--base", str(base)]) == 2
    assert "too few labels to adapt" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\ncaller0.wav,contempt\n")
    assert cli.main(["adapt", "--labels", str(bad), "--out", str(tmp_path / "m"), "--base", str(base)]) == 2
    assert "unknown label(s)" in capsys.readouterr().err
