"""Canonical emotion labels (DFEW's seven, optionally MAFW's extras) and their affect coordinates."""

from __future__ import annotations

CANONICAL_LABELS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")
MAFW_EXTRA_LABELS: tuple[str, ...] = ("contempt", "anxiety", "helplessness", "disappointment")

# Raw vocabularies of the corpora and backends we know, mapped onto canonical labels.
# Labels with no canonical twin (calm, boredom) go to the closest one; the raw label is kept.
SYNONYMS: dict[str, str] = {
    "neutral": "neutral",
    "neu": "neutral",
    "calm": "neutral",
    "boredom": "neutral",
    "bored": "neutral",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "hap": "happy",
    "excited": "happy",
    "sad": "sad",
    "sadness": "sad",
    "angry": "angry",
    "anger": "angry",
    "ang": "angry",
    "frustrated": "angry",
    "frustration": "angry",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "disgust": "disgust",
    "disgusted": "disgust",
    "surprise": "surprise",
    "surprised": "surprise",
    "contempt": "contempt",
    "anxiety": "anxiety",
    "anxious": "anxiety",
    "helplessness": "helplessness",
    "disappointment": "disappointment",
    "disappointed": "disappointment",
}

# Circumplex coordinates (valence -1..1, arousal 0..1) used to turn class probabilities into
# expected valence/arousal. Values follow the usual placement of these categories
# (Russell 1980; Warriner-style norms rounded), not a fit to our data.
AFFECT: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.3),
    "calm": (0.3, 0.15),
    "boredom": (-0.3, 0.1),
    "happy": (0.8, 0.65),
    "sad": (-0.7, 0.25),
    "angry": (-0.7, 0.9),
    "fear": (-0.75, 0.8),
    "disgust": (-0.65, 0.55),
    "surprise": (0.2, 0.85),
    "contempt": (-0.55, 0.45),
    "anxiety": (-0.55, 0.7),
    "helplessness": (-0.6, 0.3),
    "disappointment": (-0.55, 0.35),
}


def canonical(raw: str) -> str | None:
    """Map one raw label onto the canonical set; None when we do not know it."""
    return SYNONYMS.get(raw.strip().lower())


def to_canonical_scores(raw_scores: dict[str, float]) -> dict[str, float]:
    """Fold raw-class probabilities onto canonical labels; every canonical label present, sum 1."""
    out = dict.fromkeys(CANONICAL_LABELS, 0.0)
    for raw, p in raw_scores.items():
        label = canonical(raw)
        if label is None:
            continue
        out[label] = out.get(label, 0.0) + float(p)
    total = sum(out.values())
    if total <= 0:
        return {k: (1.0 if k == "neutral" else 0.0) for k in out}
    return {k: v / total for k, v in out.items()}


def _affect(raw: str) -> tuple[float, float] | None:
    """Coordinates of a raw label, falling back to its canonical twin ("fearful" -> "fear")."""
    key = raw.strip().lower()
    if key in AFFECT:
        return AFFECT[key]
    label = canonical(key)
    return AFFECT.get(label) if label is not None else None


def valence_arousal(raw_scores: dict[str, float]) -> tuple[float, float]:
    """Probability-weighted circumplex position of a raw score distribution."""
    known = [(coords, float(p)) for raw, p in raw_scores.items() if (coords := _affect(raw)) is not None]
    total = sum(p for _, p in known) or 1.0
    v = sum(coords[0] * p for coords, p in known) / total
    a = sum(coords[1] * p for coords, p in known) / total
    return float(v), float(a)
