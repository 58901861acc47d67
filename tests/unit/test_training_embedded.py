"""Training-side pieces of the embedded model: speaker references, calibration metrics, the reserved
corpora guard, and `--ship-only --corrections` end to end on tiny synthetic corpora.

No corpus audio may be redistributed, so the corpora here are synthetic tones laid out with the real
file-name conventions; they exercise the code paths, not the accuracy (docs/MODELS.md has that).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from training import corpora, corrections, evaluation
from training import voice as training
from worker.pipeline.voice.embedded import classifier
from worker.pipeline.voice.embedded.model import load_model

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "worker" / "weights"


def _tone(f0: float, seconds: float, rate: int, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(f0 * (1.0 + 0.05 * np.sin(2 * np.pi * 0.7 * t))) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (0.2 * voice * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t) ** 2) + noise).astype(np.float32)


def test_references_never_use_the_clip_itself_and_respect_the_pool() -> None:
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    speakers = np.array(["a", "a", "a", "b", "b", "c"])
    refs = evaluation.build_references(x, speakers, seed=0)
    assert refs.n.tolist() == [2, 2, 2, 1, 1, 0]  # the one-clip speaker gets no reference
    assert refs.mean[0].tolist() == x[[1, 2]].mean(axis=0).tolist()
    assert refs.mean[3].tolist() == x[4].tolist()
    pool = np.array([False, True, False, True, True, True])
    pooled = evaluation.build_references(x, speakers, seed=0, pool=pool)
    assert pooled.mean[0].tolist() == x[1].tolist() and pooled.n[1] == 0


def test_speaker_normalise_shrinks_a_flat_reference() -> None:
    x = np.array([[2.0, 5.0]])
    global_std = np.array([1.0, 2.0])
    z = classifier.speaker_normalise(x, np.array([1.0, 1.0]), np.zeros(2), 12.0, global_std)
    # std 0 from the reference is blended with the global spread, so nothing divides by zero.
    prior = classifier.REFERENCE_PRIOR
    expected = (x - 1.0) / np.sqrt(prior * global_std**2 / (12 + prior))
    assert np.allclose(z, expected)


def test_ece_and_temperature() -> None:
    classes = ("a", "b")
    rng = np.random.default_rng(0)
    truth = np.where(rng.random(2000) < 0.5, "a", "b")
    # Over-confident logits: right 70% of the time but saying ~99%.
    right = rng.random(2000) < 0.7
    predicted = np.where(right, truth, np.where(truth == "a", "b", "a"))
    logits = np.where((predicted == "a")[:, None], [[5.0, 0.0]], [[0.0, 5.0]])
    before = evaluation.expected_calibration_error(evaluation.softmax(logits), classes, truth)
    t = evaluation.fit_temperature(logits, classes, truth)
    after = evaluation.expected_calibration_error(evaluation.softmax(logits, t), classes, truth)
    assert before > 0.25 and after < 0.05 and t > 2.0


def test_reserved_corpora_are_refused() -> None:
    clip = corpora.Clip(Path("Angry/SM1_F01_A01.wav"), "urdu", "urdu-M01", "angry")
    with pytest.raises(ValueError, match="reserved"):
        corpora.check_trainable([clip])
    corpora.check_trainable([corpora.Clip(Path("a.wav"), "emodb", "emodb-03", "angry")])
    source = (REPO / "training" / "voice.py").read_text()
    assert "independent" not in source.split('"""', 2)[2].split("def ")[0]  # no import of the lists


def test_correction_labels_map_onto_model_classes() -> None:
    assert corrections.model_class("fear") == "fearful"
    assert corrections.model_class("Surprise") == "surprised"
    assert corrections.model_class("angry") == "angry"
    assert corrections.model_class("contempt") is None
    assert corrections.model_class("nonsense") is None


def _fake_corpora(root: Path) -> tuple[Path, Path]:
    rate = 16_000
    ravdess = root / "ravdess"
    for actor in (1, 2):
        folder = ravdess / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for emotion in range(1, 9):
            for rep in (1, 2):
                audio = _tone(100.0 + 15 * emotion + 40 * actor, 1.0, rate, emotion * 10 + rep)
                name = f"03-01-{emotion:02d}-01-01-{rep:02d}-{actor:02d}.wav"
                soundfile.write(folder / name, audio, rate)
    emodb = root / "emodb"
    emodb.mkdir()
    for speaker in (3, 8):
        for index, letter in enumerate("WLEAFTN"):
            for take in "ab":
                audio = _tone(110.0 + 12 * index + 30 * speaker, 1.0, rate, index * 7 + ord(take))
                soundfile.write(emodb / f"{speaker:02d}a01{letter}{take}.wav", audio, rate)
    return ravdess, emodb


def test_ship_only_with_corrections_writes_new_version(tmp_path: Path) -> None:
    ravdess, emodb = _fake_corpora(tmp_path)
    out = tmp_path / "weights"
    out.mkdir()
    shutil.copy(WEIGHTS / classifier.METADATA_FILE, out / classifier.METADATA_FILE)  # the recorded recipe
    call = np.stack([_tone(140.0, 6.0, 8_000, 1), _tone(210.0, 6.0, 8_000, 2)], axis=1)
    soundfile.write(tmp_path / "call.wav", call, 8_000)
    lines = [
        {"media": str(tmp_path / "call.wav"), "channel": 1, "start_s": s, "end_s": s + 1.5,
         "label": label, "speaker": "customer"}
        for s, label in ((0.0, "angry"), (2.0, "fear"), (4.0, "neutral"))
    ] + [{"media": str(tmp_path / "call.wav"), "channel": 0, "start_s": 0.0, "end_s": 1.0,
          "label": "contempt", "speaker": "agent"},
         # A call deleted since it was corrected: skipped, the rest still trains.
         {"media": str(tmp_path / "deleted.wav"), "channel": 0, "start_s": 0.0, "end_s": 2.0,
          "label": "sad", "speaker": "customer"}]
    corrections_file = tmp_path / "corrections.jsonl"
    corrections_file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    extra = corrections.load(corrections_file, np.ones(413))
    assert extra is not None and extra.y.tolist() == ["angry", "fearful", "neutral"]
    assert extra.normalised.shape == (3, 413)  # each span has two other spans of its speaker

    common = ["--ravdess", str(ravdess), "--emodb", str(emodb), "--out", str(out),
              "--cache-dir", str(tmp_path / "cache"), "--ship-only"]
    assert training.main([*common, "--corrections", str(corrections_file)]) == 0
    with_corrections = json.loads((out / classifier.METADATA_FILE).read_text())
    assert with_corrections["training_data"]["corrections"] == 3
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert training.main([*common, "--corrections", str(empty)]) == 0
    without = json.loads((out / classifier.METADATA_FILE).read_text())
    assert without["training_data"]["corrections"] == 0
    assert without["version"] != with_corrections["version"]
    assert without["version"].startswith("ser-v2+")
    model = load_model(weights_path=out)
    assert model.version == without["version"]
    assert (out / classifier.WEIGHTS_FILE).stat().st_size < 2 * 1024 * 1024
