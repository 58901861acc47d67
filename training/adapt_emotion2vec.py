"""`callpulse adapt --base EMOTION2VEC_DIR`: a contact center's labels adapt an emotion2vec release's
head on its utterance embedding; the encoder stays frozen (no gradient ever reaches it, and its
weights are copied unchanged).

The recipe is the embedded model's (training/adaptation.py) on another representation: a linear
correction over the standardised embedding is added to the base head's log-probabilities, fitted by
L-BFGS on class-balanced cross-entropy with an L2 pull towards zero (few labels leave the base
answer), classes with fewer than 5 labels frozen. Because everything is linear, the correction folds
into the release's own `proj` layer, so the output is an ordinary emotion2vec release directory
(`--backend emotion2vec --model-path OUT`) with its own version. A base without a head (the
self-supervised emotion2vec) gets a new head over the classes that have 5 labels; the others are
written as `unuse_<class>` in tokens.txt, the release's own way of masking an output.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from training import adapt_data
from training.adaptation import BIAS_L2, L2, MIN_PER_CLASS, canonical_scores, group_folds

# The nine classes of emotion2vec+ (its tokens.txt, in head order): the head a headless base gets.
RELEASE_CLASSES = (
    "angry",
    "disgusted",
    "fearful",
    "happy",
    "neutral",
    "other",
    "sad",
    "surprised",
    "unknown",
)


def is_release(path: Path | None) -> bool:
    return path is not None and (path / "config.yaml").is_file() and (path / "model.pt").is_file()


class Head:
    """A linear head over the utterance embedding: logits = e @ weight.T + bias, `used` columns only."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, used: np.ndarray) -> None:
        self.weight, self.bias, self.used = weight, bias, used

    def probabilities(self, e: np.ndarray) -> np.ndarray:
        logits = e @ self.weight.T + self.bias
        logits = np.where(self.used, logits, -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def fit(
    base: Head, e: np.ndarray, y: np.ndarray, classes: Sequence[str], l2: float = L2
) -> tuple[Head, list[str]]:
    """The adapted head (the base plus a fitted correction) and the classes the correction covers."""
    # Rows labelled with a class the head has no output for (a headless base's rare classes) cannot
    # be fitted; the held-out estimate still counts them as misses.
    keep = np.array([bool(base.used[list(classes).index(c)]) for c in y])
    e, y = e[keep], y[keep]
    counts = {c: int(np.sum(y == c)) for c in classes}
    active = np.array([counts[c] >= MIN_PER_CLASS for c in classes]) & base.used
    mean, scale = e.mean(axis=0), e.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = (e - mean) / scale
    n, d = z.shape
    k = len(classes)
    target = np.zeros((n, k))
    target[np.arange(n), [list(classes).index(c) for c in y]] = 1.0
    present = [c for c in classes if counts[c] > 0]
    row_w = np.array([n / (len(present) * counts[c]) for c in y])
    row_w /= row_w.sum()
    base_logp = np.log(np.maximum(base.probabilities(e), 1e-300))
    mask = active.astype(np.float64)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: d * k].reshape(d, k) * mask
        b = theta[d * k :] * mask
        logits = np.where(base.used, base_logp + z @ w + b, -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -float(np.sum(row_w * np.sum(target * np.where(target > 0, logp, 0.0), axis=1)))
        loss += 0.5 * l2 * float(np.sum(w * w)) + 0.5 * BIAS_L2 * float(np.sum(b * b))
        g = (np.exp(logp) - target) * row_w[:, None]
        return loss, np.concatenate(
            [((z.T @ g + l2 * w) * mask).ravel(), (g.sum(axis=0) + BIAS_L2 * b) * mask]
        )

    result = minimize(objective, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    w = result.x[: d * k].reshape(d, k) * mask
    b = result.x[d * k :] * mask
    # log_softmax(base) + z·w + b and base logits + z·w + b give the same softmax: fold it in.
    weight = base.weight + (w / scale[:, None]).T
    bias = base.bias + b - (mean / scale) @ w
    return Head(weight, bias, base.used), [c for c, a in zip(classes, active, strict=True) if a]


def held_out(
    base: Head, e: np.ndarray, y: np.ndarray, groups: np.ndarray, classes: Sequence[str], has_head: bool
) -> dict[str, Any]:
    folds, how = group_folds(groups, y)
    base_p = base.probabilities(e)
    adapted = np.zeros_like(base_p)
    for test in folds:
        head, _ = fit(base, e[~test], y[~test], classes)
        adapted[test] = head.probabilities(e[test])
    used = [c for c, u in zip(classes, base.used, strict=True) if u]
    pick = [list(classes).index(c) for c in used]
    report: dict[str, Any] = {
        "folds": len(folds),
        "split": how,
        "groups": int(np.unique(groups).size),
        "adapted": canonical_scores(y, adapted[:, pick], used),
    }
    if has_head:
        report["base"] = canonical_scores(y, base_p[:, pick], used)
    return report


def describe(report: dict[str, Any]) -> str:
    h = report["held_out"]
    a = h["adapted"]
    lines = [
        f"held-out estimate ({h['folds']} folds, {h['split']}, {h['groups']} speaker/file groups, "
        f"{a['n']} labels; canonical labels):"
    ]
    if "base" in h:
        b = h["base"]
        lines.append(f"  base    {report['base_version']}: UAR {b['uar']:.1%}  accuracy {b['accuracy']:.1%}")
    else:
        lines.append(f"  base    {report['base_version']}: no emotion head (the encoder alone)")
    lines.append(f"  adapted: UAR {a['uar']:.1%}  accuracy {a['accuracy']:.1%}")
    if "base" in h and a["uar"] <= h["base"]["uar"]:
        lines.append(
            "  the adapted head is not better than the base on held-out labels: label more "
            "(more speakers, every emotion) before adopting it"
        )
    return "\n".join(lines)


def run(
    spans: list[adapt_data.LabeledSpan],
    base_dir: Path,
    out: Path,
    source: str,
    *,
    strict: bool,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Embeddings → adapted head → a new release directory in `out`; returns the report."""
    import torch

    from worker.pipeline.contracts import SegmentInput
    from worker.pipeline.voice.funasr import emotion2vec, release

    model = emotion2vec.load_model(base_dir, "cpu", require_head=False)
    audio, used_rows = adapt_data.clips(spans, strict=strict, log=log)
    if not used_rows:
        raise adapt_data.LabelsError("no usable labelled audio")
    log(f"embedding {len(audio)} span(s) with the frozen emotion2vec encoder")
    e = model.embed(
        [
            SegmentInput(
                key=str(i), audio=a, sample_rate=16_000, start_s=0.0, end_s=a.size / 16_000, role="unknown"
            )
            for i, a in enumerate(audio)
        ]
    ).astype(np.float64)
    y = np.array([spans[i].label for i in used_rows])
    groups = np.array([spans[i].group for i in used_rows])
    classes = tuple(model.classes or RELEASE_CLASSES)
    has_head = model.net.proj is not None
    if has_head:
        assert model.net.proj is not None
        weight = model.net.proj.weight.detach().double().numpy()
        bias = model.net.proj.bias.detach().double().numpy()
        used = np.array([not c.startswith("unuse") for c in classes])
    else:
        weight, bias = np.zeros((len(classes), e.shape[1])), np.zeros(len(classes))
        used = np.array([int(np.sum(y == c)) >= MIN_PER_CLASS for c in classes])
    counts = {c: int(np.sum(y == c)) for c in classes if np.any(y == c)}
    few = {c: n for c, n in counts.items() if n < MIN_PER_CLASS}
    for c, n in few.items():
        log(
            f"warning: only {n} label(s) of {c!r} (fewer than {MIN_PER_CLASS}): "
            + (f"{c!r} keeps the base head's answer" if has_head else f"{c!r} gets no output")
        )
    if int(used.sum()) < 2 or len(few) == len(counts):
        raise ValueError(
            f"too few labels to adapt ({counts}): need {MIN_PER_CLASS} or more of at least "
            + ("one class" if has_head else "two classes")
        )
    base = Head(weight, bias, used)
    report: dict[str, Any] = {
        "labels": counts,
        "frozen_classes": sorted(few),
        "l2": L2,
        "min_per_class": MIN_PER_CLASS,
        "source": source,
        "base_version": model.version,
        "encoder": "frozen",
        "held_out": held_out(base, e, y, groups, classes, has_head),
    }
    head, active = fit(base, e, y, classes)
    report["adapted_classes"] = active
    out.mkdir(parents=True, exist_ok=True)
    for name in (release.CONFIG, "configuration.json"):
        if (base_dir / name).is_file():
            shutil.copyfile(base_dir / name, out / name)
    state = release.read_weights(base_dir)
    state["proj.weight"] = torch.from_numpy(head.weight).float()
    state["proj.bias"] = torch.from_numpy(head.bias).float()
    torch.save(state, out / release.WEIGHTS)
    names = [c if u else f"unuse_{c}" for c, u in zip(classes, used, strict=True)]
    (out / emotion2vec.TOKENS).write_text("\n".join(names) + "\n", encoding="utf-8")
    (out / "adaptation.json").write_text(json.dumps(report, indent=2))
    report["version"] = release.version(out, [emotion2vec.TOKENS, release.CONFIG])
    return report
