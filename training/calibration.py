"""Temperature scaling and expected calibration error, shared by every model's training code.

A model is calibrated when, of the answers it gives with confidence p, a share p is right: what a
supervisor needs before trusting "angry 0.71" or the `uncertain` flag. Temperature scaling (Guo et
al. 2017) divides the logits by one scalar fitted on held-out data; it never changes the argmax."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import minimize_scalar

ECE_BINS = 15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true class indices."""
    p = softmax(logits, temperature)[np.arange(len(labels)), np.asarray(labels, dtype=int)]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray,
                    log_bounds: tuple[float, float] = (-3.0, 3.0)) -> float:
    """The temperature that minimises held-out NLL, searched over log T in `log_bounds`."""
    if len(labels) == 0:
        return 1.0
    result = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                             bounds=log_bounds, method="bounded")
    return float(np.exp(result.x))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: |accuracy − mean confidence| per equal-width confidence bin, weighted by the
    bin's share of samples."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if len(probs) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels, dtype=int)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)
