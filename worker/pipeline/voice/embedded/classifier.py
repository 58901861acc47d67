"""The embedded model's classifier as plain arrays: two small heads plus per-speaker normalisation.

* ``speaker`` head: reads features normalised against the same speaker's other speech
  (``speaker_normalise``);
* ``plain`` head: reads the raw features. Without a speaker reference it decides alone; with one,
  the two heads' probabilities are mixed by how neutral the speaker's own baseline sounds to the
  plain head (``speaker_weight``): normalising a caller who is angry for the whole call against
  their own angry speech would call them neutral, so such a speaker leans on the plain head.
* optional ``residual`` head (``callpulse adapt``): a linear correction of the combined
  log-probabilities from the plain head's hidden layer and the raw features, fitted on a
  contact center's own labels while the two heads stay frozen.

Weights live in one ``.npz`` (loaded with allow_pickle=False, arrays prefixed by head name) next to
a JSON sidecar with the classes, feature spec, recipe and metrics. No pickles and no scikit-learn
objects are needed at inference: the forward passes below are the whole model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

WEIGHTS_FILE = "ser_embedded.npz"
METADATA_FILE = "ser_embedded.json"
VERSION_PREFIX = "ser-v2"
HEADS: tuple[str, ...] = ("speaker", "plain")
# How the heads are combined is part of what a version hashes: a new rule gives new predictions.
COMBINATION = "mix-by-plain-neutral-v1"
# Classes the plain head's view of a speaker's baseline counts as "neutral" (the raw classes that
# fold to canonical neutral).
NEUTRAL_CLASSES: tuple[str, ...] = ("neutral", "calm", "boredom")
# A speaker's spread is estimated from <= 12 clips; blend in this many pseudo-clips of the global
# spread so one flat reference cannot blow a feature up.
REFERENCE_PRIOR = 4.0


@dataclass(frozen=True)
class SoftmaxClassifier:
    """z = (x - mean) / scale; hidden layers with ReLU; softmax(logits / temperature).

    With no hidden layers this is multinomial logistic regression.
    """

    classes: tuple[str, ...]
    mean: np.ndarray  # (n_features,)
    scale: np.ndarray  # (n_features,)
    weights: tuple[np.ndarray, ...]  # (in, out) per layer, last one maps to the classes
    biases: tuple[np.ndarray, ...]
    temperature: float = 1.0

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        hidden = (np.atleast_2d(features).astype(np.float32) - self.mean) / self.scale
        for index, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = hidden @ w + b
            if index < len(self.weights) - 1:
                hidden = np.maximum(hidden, 0.0)
        return cast(np.ndarray, hidden)

    def predict_proba(self, features: np.ndarray, temperature: float | None = None) -> np.ndarray:
        t = self.temperature if temperature is None else temperature
        logits = self.logits(features).astype(np.float64) / max(t, 1e-3)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return cast(np.ndarray, exp / exp.sum(axis=1, keepdims=True))

    def hidden(self, features: np.ndarray) -> np.ndarray:
        """The last hidden layer's activations (the standardised input for a linear head)."""
        hidden = (np.atleast_2d(features).astype(np.float32) - self.mean) / self.scale
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            hidden = np.maximum(hidden @ w + b, 0.0)
        return cast(np.ndarray, hidden)

    def with_temperature(self, temperature: float) -> SoftmaxClassifier:
        return SoftmaxClassifier(self.classes, self.mean, self.scale, self.weights, self.biases, temperature)

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        out = {
            f"{prefix}mean": self.mean.astype(np.float32),
            f"{prefix}scale": self.scale.astype(np.float32),
            f"{prefix}temperature": np.array([self.temperature], dtype=np.float32),
        }
        for index, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"{prefix}w{index}"] = w.astype(np.float32)
            out[f"{prefix}b{index}"] = b.astype(np.float32)
        return out


def summarise(matrix: np.ndarray) -> dict[str, Any]:
    """JSON summary of one speaker's clips (rows of features): n, per-feature mean and std."""
    matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    n = int(matrix.shape[0])
    if n == 0:
        return {"n": 0, "mean": [], "std": []}
    # 5 significant digits: 2 x 413 numbers stay ~10 KB of JSON per speaker.
    return {
        "n": n,
        "mean": [float(f"{v:.5g}") for v in matrix.mean(axis=0)],
        "std": [float(f"{v:.5g}") for v in matrix.std(axis=0)],
    }


# A segment is never normalised against itself (training never does either): when it is one of
# the reference's clips it is taken out, and with fewer than this many others left the plain head
# decides (one clip normalised against itself is all zeros: the same answer for every segment).
MIN_OTHER_CLIPS = 2


def leave_out(reference: dict[str, Any], x: np.ndarray) -> dict[str, Any] | None:
    """The reference without the clip whose features are ``x``; None when too few clips remain."""
    n = int(reference.get("n", 0))
    if n - 1 < MIN_OTHER_CLIPS:
        return None
    mean = np.asarray(reference["mean"], dtype=np.float64)
    std = np.asarray(reference["std"], dtype=np.float64)
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    rest_mean = (n * mean - x) / (n - 1)
    rest_sumsq = n * (np.square(std) + np.square(mean)) - np.square(x)
    rest_var = np.maximum(rest_sumsq / (n - 1) - np.square(rest_mean), 0.0)
    return {**reference, "n": n - 1, "mean": rest_mean.tolist(), "std": np.sqrt(rest_var).tolist(),
            "includes_segment": False}


def weights_digest(arrays: dict[str, np.ndarray], classes: tuple[str, ...], extra: str = "") -> str:
    """sha256 over named arrays, the class list and `extra`: what a model version hashes."""
    sha = hashlib.sha256()
    for name, array in sorted(arrays.items()):
        sha.update(name.encode())
        sha.update(np.ascontiguousarray(array).tobytes())
    sha.update(json.dumps(list(classes)).encode())
    sha.update(extra.encode())
    return sha.hexdigest()


def speaker_normalise(
    x: np.ndarray, mean: np.ndarray, std: np.ndarray, n: np.ndarray | float, global_std: np.ndarray
) -> np.ndarray:
    """(x - speaker mean) / shrunk speaker std, row by row (mean/std/n broadcast per row)."""
    n_col = np.reshape(np.asarray(n, dtype=np.float64), (-1, 1))
    pooled = n_col * np.square(std) + REFERENCE_PRIOR * np.square(global_std)
    spread = np.sqrt(pooled / (n_col + REFERENCE_PRIOR))
    return cast(np.ndarray, (np.atleast_2d(x) - mean) / np.maximum(spread, 1e-6))


@dataclass(frozen=True)
class Residual:
    """Linear correction of the combined log-probabilities: ((inputs - mean) / scale) @ w + b, where
    inputs = [plain head's hidden layer, raw features]. Columns of classes it was not fitted for are
    zero, so those classes keep the base model's answer."""

    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)
    weights: np.ndarray  # (d, n_classes)
    bias: np.ndarray  # (n_classes,)

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(inputs).astype(np.float64) - self.mean) / self.scale
        return cast(np.ndarray, z @ self.weights.astype(np.float64) + self.bias)

    def arrays(self, prefix: str = "residual/") -> dict[str, np.ndarray]:
        return {f"{prefix}mean": self.mean.astype(np.float32),
                f"{prefix}scale": self.scale.astype(np.float32),
                f"{prefix}w": self.weights.astype(np.float32), f"{prefix}b": self.bias.astype(np.float32)}


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@dataclass(frozen=True)
class EmbeddedWeights:
    """Both heads, the global feature spread used by the normalisation, an optional residual head
    (an adapted model) and the JSON metadata."""

    heads: dict[str, SoftmaxClassifier]
    global_std: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    residual: Residual | None = None

    @property
    def classes(self) -> tuple[str, ...]:
        return self.heads["speaker"].classes

    @property
    def n_features(self) -> int:
        return self.heads["plain"].n_features

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"global_std": self.global_std.astype(np.float32)}
        for name in HEADS:
            out.update(self.heads[name].arrays(f"{name}/"))
        if self.residual is not None:
            out.update(self.residual.arrays())
        return out

    def digest(self) -> str:
        """sha256 over the arrays themselves (zip timestamps must not change the version) and the
        combination rule."""
        return weights_digest(self.arrays(), self.classes, COMBINATION)

    @property
    def version(self) -> str:
        kind = "-adapted" if self.residual is not None else ""
        return f"{VERSION_PREFIX}{kind}+{self.digest()[:8]}"

    def with_residual(self, residual: Residual | None, metadata: dict[str, Any]) -> EmbeddedWeights:
        return EmbeddedWeights(self.heads, self.global_std, metadata, residual)

    def residual_inputs(self, x: np.ndarray) -> np.ndarray:
        """What the residual head reads: the plain head's hidden layer beside the raw features."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        return np.hstack([self.heads["plain"].hidden(x).astype(np.float64), x])

    def speaker_weight(self, reference_mean: np.ndarray) -> np.ndarray:
        """Per row, how far to trust the speaker head: the plain head's probability that the
        speaker's average voice (the reference mean) is neutral. A caller whose whole call sounds
        angry gets ~0 (plain head); one whose baseline is calm gets ~1 (speaker head)."""
        p = self.heads["plain"].predict_proba(np.atleast_2d(reference_mean))
        columns = [i for i, c in enumerate(self.classes) if c in NEUTRAL_CLASSES]
        return np.asarray(p[:, columns].sum(axis=1), dtype=np.float64)

    def combined(self, x: np.ndarray, ref_mean: np.ndarray, ref_std: np.ndarray, ref_n: np.ndarray,
                 use_residual: bool = True, fixed_weight: float | None = None) -> np.ndarray:
        """Raw-class probabilities per row. Rows with ref_n == 0 have no reference: plain head.
        `fixed_weight` replaces the speaker weight (evaluation: 1.0 is the speaker head alone)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        ref_n = np.asarray(ref_n, dtype=np.float64).reshape(-1)
        out = self.heads["plain"].predict_proba(x)
        has = ref_n > 0
        if has.any():
            normalised = speaker_normalise(x[has], ref_mean[has], ref_std[has], ref_n[has], self.global_std)
            speaker = self.heads["speaker"].predict_proba(normalised)
            q = (self.speaker_weight(ref_mean[has]) if fixed_weight is None
                 else np.full(int(has.sum()), fixed_weight))[:, None]
            out[has] = q * speaker + (1.0 - q) * out[has]
        if use_residual and self.residual is not None:
            logp = np.log(np.maximum(out, 1e-12)) + self.residual.logits(self.residual_inputs(x))
            out = _softmax_rows(logp)
        return out

    def normalise(self, x: np.ndarray, reference: dict[str, Any]) -> np.ndarray:
        return speaker_normalise(
            x,
            np.asarray(reference["mean"], dtype=np.float64),
            np.asarray(reference["std"], dtype=np.float64),
            float(reference["n"]),
            self.global_std,
        )


def save(model: EmbeddedWeights, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / WEIGHTS_FILE
    np.savez_compressed(weights_path, allow_pickle=False, **model.arrays())
    metadata = {
        **model.metadata,
        "classes": list(model.classes),
        "version": model.version,
        "weights_sha256": model.digest(),
        "n_layers": {name: len(model.heads[name].weights) for name in HEADS},
        # The speaker head's temperature is the headline one (what most segments get); both are listed.
        "temperature": model.heads["speaker"].temperature,
        "temperatures": {name: model.heads[name].temperature for name in HEADS},
        "combination": COMBINATION,
    }
    metadata_path = directory / METADATA_FILE
    metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n")
    return weights_path, metadata_path


def _head(data: Any, prefix: str, n_layers: int, classes: tuple[str, ...]) -> SoftmaxClassifier:
    scale = data[f"{prefix}scale"]
    return SoftmaxClassifier(
        classes=classes,
        mean=data[f"{prefix}mean"],
        scale=np.where(scale > 0, scale, 1.0).astype(np.float32),
        weights=tuple(data[f"{prefix}w{i}"] for i in range(n_layers)),
        biases=tuple(data[f"{prefix}b{i}"] for i in range(n_layers)),
        temperature=float(data[f"{prefix}temperature"][0]),
    )


def _residual(data: Any) -> Residual:
    scale = data["residual/scale"].astype(np.float64)
    return Residual(mean=data["residual/mean"].astype(np.float64), scale=np.where(scale > 0, scale, 1.0),
                    weights=data["residual/w"].astype(np.float64), bias=data["residual/b"].astype(np.float64))


def load(weights_path: Path) -> EmbeddedWeights:
    """Load weights (``.npz``) and the JSON sidecar next to it; refuse inconsistent files."""
    metadata = json.loads(weights_path.with_suffix(".json").read_text())
    classes = tuple(metadata["classes"])
    layers = metadata["n_layers"]
    if not isinstance(layers, dict):
        raise ValueError(f"{weights_path}: single-head ser-v1 weights; this build needs ser-v2 (two heads)")
    with np.load(weights_path, allow_pickle=False) as data:
        model = EmbeddedWeights(
            heads={name: _head(data, f"{name}/", int(layers[name]), classes) for name in HEADS},
            global_std=data["global_std"].astype(np.float64),
            metadata=metadata,
            residual=_residual(data) if "residual/w" in data.files else None,
        )
    for name, head in model.heads.items():
        if head.weights[-1].shape[1] != len(classes) or head.n_features != model.global_std.shape[0]:
            raise ValueError(f"{weights_path}: head {name!r} does not match {len(classes)} classes")
    res = model.residual
    width = model.residual_inputs(np.zeros((1, model.n_features))).shape[1]
    if res is not None and (res.weights.shape != (width, len(classes)) or res.mean.shape[0] != width):
        raise ValueError(f"{weights_path}: the residual head does not fit this model's heads")
    return model
