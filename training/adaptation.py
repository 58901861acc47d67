"""Adapt the embedded voice model to a contact center's own labels without the public corpora.

The shipped heads stay frozen; a residual head learns a linear correction of their combined
log-probabilities from what the shipped model already computes for every segment: the plain head's
hidden layer beside the raw features ("hidden+x"). Nothing of the training corpora is needed, so a
deployment adapts from its own labels alone, in seconds.

* L2-regularised towards zero: with few labels the answer stays close to the base model's.
* Rows weighted so every labelled class counts alike (contact-center labels are mostly neutral).
* A class with fewer than `MIN_PER_CLASS` labels gets no column: it keeps the base model's logit
  (its prior), and the caller is warned. Its rows still teach the other columns that they were wrong.
* The held-out estimate refits on folds grouped by speaker (or by file, or by call for stored
  corrections), so no speaker is in both the fitted and the scored part, and scores the base model
  on the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from training import evaluation
from worker.pipeline import labels
from worker.pipeline.voice.embedded import classifier

MIN_PER_CLASS = 5
L2 = 0.3  # per labelled row, on standardised inputs (docs/MODELS.md: the learning curves)
BIAS_L2 = 1e-3
MAX_FOLDS = 5
SEED = 0


@dataclass
class LabeledFeatures:
    x: np.ndarray  # (n, N_FEATURES)
    y: np.ndarray  # model class per row
    groups: np.ndarray  # speaker/file per row


def references(x: np.ndarray, groups: np.ndarray) -> evaluation.References:
    """Production-like references: up to 12 *other* rows of the same speaker, labels unused."""
    return evaluation.build_references(x, groups, SEED)


def base_probabilities(model: classifier.EmbeddedWeights, x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    refs = references(x, groups)
    return model.combined(x, refs.mean, refs.std, refs.n, use_residual=False)


def fit_residual(model: classifier.EmbeddedWeights, x: np.ndarray, y: np.ndarray, base_p: np.ndarray,
                 l2: float = L2) -> tuple[classifier.Residual, list[str]]:
    """The residual head on these rows; returns it and the classes it has a column for."""
    classes = list(model.classes)
    counts = {c: int(np.sum(y == c)) for c in classes}
    active = np.array([counts[c] >= MIN_PER_CLASS for c in classes])
    inputs = model.residual_inputs(x)
    mean = inputs.mean(axis=0)
    scale = inputs.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = (inputs - mean) / scale
    n, d = z.shape
    k = len(classes)
    target = np.zeros((n, k))
    target[np.arange(n), [classes.index(c) for c in y]] = 1.0
    present = [c for c in classes if counts[c] > 0]
    row_w = np.array([n / (len(present) * counts[c]) for c in y])
    row_w /= row_w.sum()
    base_logp = np.log(np.maximum(base_p, 1e-12))
    mask = active.astype(np.float64)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: d * k].reshape(d, k) * mask
        b = theta[d * k :] * mask
        logits = base_logp + z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -float(np.sum(row_w * np.sum(target * logp, axis=1)))
        loss += 0.5 * l2 * float(np.sum(w * w)) + 0.5 * BIAS_L2 * float(np.sum(b * b))
        g = (np.exp(logp) - target) * row_w[:, None]
        grad_w = (z.T @ g + l2 * w) * mask
        grad_b = (g.sum(axis=0) + BIAS_L2 * b) * mask
        return loss, np.concatenate([grad_w.ravel(), grad_b])

    result = minimize(objective, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                      options={"maxiter": 500})
    w = result.x[: d * k].reshape(d, k) * mask
    b = result.x[d * k :] * mask
    residual = classifier.Residual(mean=mean, scale=scale, weights=w, bias=b)
    return residual, [c for c, a in zip(classes, active, strict=True) if a]


def group_folds(groups: np.ndarray, y: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Test-row masks of up to 5 folds that never split a group; with a single group, plain
    stratified folds (and the estimate says it is not grouped)."""
    rng = np.random.default_rng(SEED)
    unique = np.unique(groups)
    if unique.size >= 2:
        n_folds = min(MAX_FOLDS, unique.size)
        order = rng.permutation(unique)
        sizes = np.zeros(n_folds)
        fold_of: dict[Any, int] = {}
        # Largest groups first, each to the currently smallest fold: folds of similar size.
        for g in sorted(order, key=lambda g: -int(np.sum(groups == g))):
            fold = int(np.argmin(sizes))
            fold_of[g] = fold
            sizes[fold] += np.sum(groups == g)
        assigned = np.array([fold_of[g] for g in groups])
        return [assigned == f for f in range(n_folds)], "grouped"
    assigned = np.zeros(len(y), dtype=int)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        assigned[idx] = np.arange(idx.size) % MAX_FOLDS
    folds = [assigned == f for f in range(MAX_FOLDS) if np.any(assigned == f)]
    return folds, "not grouped (one speaker/file)"


def canonical_scores(truth: np.ndarray, p: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """What the product shows: canonical labels (calm/boredom fold into neutral), UAR and accuracy."""
    folded = [labels.to_canonical_scores(dict(zip(classes, row, strict=True))) for row in p]
    predicted = np.array([max(f, key=f.__getitem__) for f in folded])
    expected = np.array([labels.canonical(t) or t for t in truth])
    present = sorted(set(expected.tolist()))
    recall = {c: float(np.mean(predicted[expected == c] == c)) for c in present}
    return {"uar": float(np.mean(list(recall.values()))), "accuracy": float(np.mean(predicted == expected)),
            "recall": recall, "n": int(truth.size)}


def held_out(model: classifier.EmbeddedWeights, data: LabeledFeatures, l2: float = L2) -> dict[str, Any]:
    """Base and adapted on the same held-out folds (each fold's residual fitted without it)."""
    folds, how = group_folds(data.groups, data.y)
    base = np.zeros((len(data.y), len(model.classes)))
    adapted = np.zeros_like(base)
    for test in folds:
        train = ~test
        train_p = base_probabilities(model, data.x[train], data.groups[train])
        residual, _ = fit_residual(model, data.x[train], data.y[train], train_p, l2)
        fold_model = model.with_residual(residual, model.metadata)
        refs = references(data.x[test], data.groups[test])
        base[test] = model.combined(data.x[test], refs.mean, refs.std, refs.n, use_residual=False)
        adapted[test] = fold_model.combined(data.x[test], refs.mean, refs.std, refs.n)
    return {"folds": len(folds), "split": how, "groups": int(np.unique(data.groups).size),
            "base": canonical_scores(data.y, base, model.classes),
            "adapted": canonical_scores(data.y, adapted, model.classes)}


def adapt(model: classifier.EmbeddedWeights, data: LabeledFeatures, source: str, *, estimate: bool = True,
          log: Callable[[str], None] = print) -> tuple[classifier.EmbeddedWeights, dict[str, Any]]:
    """The adapted model (base heads + a residual head fitted on every label) and its report."""
    if model.residual is not None:
        # Adapting an adapted model: its residual becomes part of the frozen base.
        log("the base model is itself adapted: its residual head is replaced, not stacked")
        model = model.with_residual(None, model.metadata)
    counts = {c: int(np.sum(data.y == c)) for c in model.classes if np.any(data.y == c)}
    few = {c: n for c, n in counts.items() if n < MIN_PER_CLASS}
    for c, n in few.items():
        log(f"warning: only {n} label(s) of {c!r} (fewer than {MIN_PER_CLASS}): {c!r} keeps the base "
            "model's prior")
    if len(few) == len(counts):
        raise ValueError(f"no label has {MIN_PER_CLASS} or more examples ({counts}): nothing to adapt")
    report: dict[str, Any] = {"labels": counts, "frozen_classes": sorted(few), "l2": L2,
                              "min_per_class": MIN_PER_CLASS, "source": source,
                              "base_version": model.version}
    if estimate:
        report["held_out"] = held_out(model, data)
    residual, active = fit_residual(model, data.x, data.y, base_probabilities(model, data.x, data.groups))
    report["adapted_classes"] = active
    metadata = {**model.metadata, "adaptation": report}
    for key in ("version", "weights_sha256"):
        metadata.pop(key, None)
    return model.with_residual(residual, metadata), report


def describe(report: dict[str, Any]) -> str:
    """The held-out estimate as people read it."""
    h = report.get("held_out")
    if not h:
        return "no held-out estimate"
    b, a = h["base"], h["adapted"]
    lines = [f"held-out estimate ({h['folds']} folds, {h['split']}, {h['groups']} speaker/file groups, "
             f"{b['n']} labels; canonical labels):",
             f"  base    {report['base_version']}: UAR {b['uar']:.1%}  accuracy {b['accuracy']:.1%}",
             f"  adapted: UAR {a['uar']:.1%}  accuracy {a['accuracy']:.1%}",
             "  recall per label (base → adapted): " + ", ".join(
                 f"{c} {b['recall'][c]:.0%}→{a['recall'][c]:.0%}" for c in b["recall"])]
    if a["uar"] <= b["uar"]:
        lines.append("  the adapted model is not better than the base on held-out labels: label more "
                     "(more speakers, every emotion) before adopting it")
    return "\n".join(lines)
