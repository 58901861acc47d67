"""Class priors as a deployment choice. The voice model was trained on a balanced prior (every label
as likely as any other), so its scores trade no label's recall away; a contact centre where most
speech is calm may prefer fewer false alarms. A tenant's preset re-weights the scores by a log-prior
shift at inference, p'(c) ∝ p(c) · π(c) / π_train(c), never by retraining, and every prediction says
which preset made it (docs/MODELS.md, "Priors", has what each preset does to per-label recall and to
an "angry" rule's false alarms on neutral speech)."""

from __future__ import annotations

import math

from worker.pipeline.labels import CANONICAL_LABELS

DEFAULT = "balanced"
# What the models were trained with: uniform over the seven canonical labels.
TRAINING_PRIOR = {label: 1.0 / len(CANONICAL_LABELS) for label in CANONICAL_LABELS}
PRESETS: dict[str, dict[str, float]] = {
    "balanced": dict(TRAINING_PRIOR),
    # Neutral-heavy, as most contact-centre speech is: fewer false alarms, less recall of the rest.
    "calls": {"neutral": 0.55, "happy": 0.12, "sad": 0.08, "angry": 0.12, "fear": 0.03, "disgust": 0.04,
              "surprise": 0.06},
}


def shift(scores: dict[str, float], preset: str) -> dict[str, float]:
    """``scores`` under the preset's prior (unchanged for the training prior or an unknown label set)."""
    prior = PRESETS.get(preset)
    if prior is None:
        raise ValueError(f"unknown prior preset {preset!r}; known: {', '.join(PRESETS)}")
    if preset == "balanced" or set(scores) - set(prior):
        return dict(scores)
    logits = {k: math.log(max(v, 1e-9)) + math.log(prior[k] / TRAINING_PRIOR[k]) for k, v in scores.items()}
    top = max(logits.values())
    raw = {k: math.exp(v - top) for k, v in logits.items()}
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}
