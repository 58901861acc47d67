"""Temperature scaling and ECE (training/calibration.py) on data with a known miscalibration,
plus the calibration recorded beside every shipped model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support import ROOT
from training.calibration import expected_calibration_error, fit_temperature, nll, softmax


def _overconfident(n: int = 4000, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose true temperature is 3: softmax(logits / 3) is the real class distribution."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 1.5, size=(n, classes))
    p = softmax(true_logits)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return true_logits * 3.0, labels


def test_temperature_undoes_a_known_overconfidence() -> None:
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert 2.6 < t < 3.4
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)
    before = expected_calibration_error(softmax(logits), labels)
    after = expected_calibration_error(softmax(logits, t), labels)
    assert before > 0.1 and after < 0.03
    # Scaling never changes which class wins.
    assert (softmax(logits, t).argmax(1) == softmax(logits).argmax(1)).all()


def test_ece_of_perfect_and_hopeless_answers() -> None:
    sure_right = np.eye(3)[[0, 1, 2, 0]]
    assert expected_calibration_error(sure_right, np.array([0, 1, 2, 0])) == pytest.approx(0.0)
    assert expected_calibration_error(sure_right, np.array([1, 2, 0, 1])) == pytest.approx(1.0)
    assert expected_calibration_error(np.zeros((0, 3)), np.array([])) == 0.0


@pytest.mark.parametrize("name", ["ser_embedded", "text_emotion", "face_expression"])
def test_every_shipped_model_records_its_temperature(name: str) -> None:
    meta = json.loads((ROOT / "worker" / "weights" / f"{name}.json").read_text())
    text = json.dumps(meta)
    assert float(meta["temperature"]) > 0
    assert "ece" in text.lower()  # the calibration measured on held-out data is recorded with it
