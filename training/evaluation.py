"""Metrics, speaker references and calibration for training and evaluating the embedded model.

References are built the way production builds them: for each clip, the feature mean/std of up to
12 *other* clips of the same speaker in the same listening condition, labels unused. Held-out
speakers' references therefore come from their own unlabelled clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training import calibration
from training.calibration import ECE_BINS, softmax
from worker.pipeline import labels
from worker.pipeline.voice.embedded import classifier

REFERENCE_CLIPS = 12


@dataclass(frozen=True)
class References:
    """Per-row speaker reference (mean, std over <= 12 other clips of the speaker, and n)."""

    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray

    def rows(self, rows: np.ndarray) -> References:
        return References(self.mean[rows], self.std[rows], self.n[rows])


def build_references(
    x: np.ndarray, speakers: np.ndarray, seed: int, k: int = REFERENCE_CLIPS, pool: np.ndarray | None = None
) -> References:
    """For each row, a random draw of up to k other rows of the same speaker (never the row itself).

    `pool` (a row mask) restricts which rows may serve as references, e.g. only low-arousal clips to
    imitate a real call, where a speaker's other speech is mostly neutral."""
    rng = np.random.default_rng(seed)
    allowed = np.ones(len(x), dtype=bool) if pool is None else pool
    mean = np.zeros_like(x, dtype=np.float64)
    std = np.zeros_like(x, dtype=np.float64)
    n = np.zeros(len(x))
    for speaker in np.unique(speakers):
        idx = np.flatnonzero(speakers == speaker)
        for i in idx:
            others = idx[(idx != i) & allowed[idx]]
            if others.size == 0:
                continue  # a one-clip speaker has no reference: n stays 0 (plain head only)
            pick = rng.choice(others, size=min(k, others.size), replace=False)
            mean[i], std[i], n[i] = x[pick].mean(axis=0), x[pick].std(axis=0), pick.size
    return References(mean, std, n)


def normalise(x: np.ndarray, refs: References, global_std: np.ndarray) -> np.ndarray:
    return classifier.speaker_normalise(x, refs.mean, refs.std, refs.n, global_std)


def global_fallback(x: np.ndarray, global_mean: np.ndarray, global_std: np.ndarray) -> np.ndarray:
    """The speaker head's input when no reference exists, using the training set's own statistics."""
    return classifier.speaker_normalise(x, global_mean, global_std, float(REFERENCE_CLIPS), global_std)


def restricted_predictions(values: np.ndarray, classes: Sequence[str], allowed: Sequence[str]) -> np.ndarray:
    """Argmax over the evaluated corpus's own classes (e.g. no "boredom" on RAVDESS)."""
    index = [list(classes).index(c) for c in allowed]
    return np.array(allowed)[np.argmax(values[:, index], axis=1)]


def war_uar(truth: np.ndarray, predicted: np.ndarray, allowed: Sequence[str]) -> dict[str, float]:
    recalls = [float(np.mean(predicted[truth == c] == c)) for c in allowed if np.any(truth == c)]
    return {"war": float(np.mean(truth == predicted)), "uar": float(np.mean(recalls)), "n": int(truth.size)}


def confusion(truth: np.ndarray, predicted: np.ndarray, allowed: Sequence[str]) -> list[list[int]]:
    return [[int(np.sum((truth == t) & (predicted == p))) for p in allowed] for t in allowed]


def canonical_accuracy(probabilities: np.ndarray, classes: Sequence[str], truth: np.ndarray) -> float:
    """What the product shows: canonical argmax after folding (calm/boredom -> neutral)."""
    return float(np.mean(_canonical(probabilities, classes, truth)[0]))


def _canonical(probabilities: np.ndarray, classes: Sequence[str], truth: np.ndarray) -> tuple[
    np.ndarray, np.ndarray
]:
    """(canonical answer right?, its confidence) per row."""
    folded = [labels.to_canonical_scores(dict(zip(classes, row, strict=True))) for row in probabilities]
    predicted = np.array([max(f, key=f.__getitem__) for f in folded])
    expected = np.array([labels.canonical(t) for t in truth])
    return predicted == expected, np.array([max(f.values()) for f in folded])


def uncertain_split(probabilities: np.ndarray, classes: Sequence[str], truth: np.ndarray,
                    below: float = 0.5) -> dict[str, float | None]:
    """What the `uncertain` flag (confidence < CALLPULSE_UNCERTAIN_BELOW) separates: the share of
    answers flagged, and the canonical accuracy of flagged and unflagged answers."""
    correct, confidence = _canonical(probabilities, classes, truth)
    flagged = confidence < below
    return {"uncertain_share": float(flagged.mean()),
            "accuracy_uncertain": float(correct[flagged].mean()) if flagged.any() else None,
            "accuracy_confident": float(correct[~flagged].mean()) if (~flagged).any() else None}


def expected_calibration_error(
    probabilities: np.ndarray, classes: Sequence[str], truth: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE (training/calibration.py) with the truth given as class names."""
    index = {name: i for i, name in enumerate(classes)}
    return calibration.expected_calibration_error(probabilities, np.array([index.get(t, -1) for t in truth]),
                                                  bins)


def fit_temperature(logits: np.ndarray, classes: Sequence[str], truth: np.ndarray) -> float:
    """Temperature minimising NLL of out-of-fold logits: makes "confidence 0.7" mean roughly 70%."""
    target = np.array([list(classes).index(t) for t in truth])
    best_t, best_nll = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(0.3), np.log(5.0), 90)):
        z = logits.astype(np.float64) / t
        z -= z.max(axis=1, keepdims=True)
        nll = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(target)), target]))
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def report(
    logits: np.ndarray,
    classes: Sequence[str],
    truth: np.ndarray,
    allowed: Sequence[str],
    temperature: float,
    with_confusion: bool = False,
) -> dict[str, object]:
    """WAR/UAR over the corpus's own classes, canonical accuracy, ECE before/after temperature."""
    raw_p, cal_p = softmax(logits), softmax(logits, temperature)
    predicted = restricted_predictions(logits, classes, allowed)
    out: dict[str, object] = dict(war_uar(truth, predicted, allowed))
    out["canonical_accuracy"] = canonical_accuracy(cal_p, classes, truth)
    out["ece_t1"] = expected_calibration_error(raw_p, classes, truth)
    out["ece_calibrated"] = expected_calibration_error(cal_p, classes, truth)
    out["uncertain_at_0.5"] = uncertain_split(cal_p, classes, truth)
    if with_confusion:
        matrix = confusion(truth, predicted, allowed)
        out["confusion"] = {"classes": list(allowed), "rows_true_cols_pred": matrix}
    return out
