"""The embedded model's classifier as plain arrays: standardiser + MLP (or softmax regression).

Weights live in an ``.npz`` (loaded with allow_pickle=False) next to a JSON sidecar with the
classes, feature spec, recipe and metrics. No pickles and no scikit-learn objects are needed at
inference: the forward pass below is the whole model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_FILE = "ser_embedded.npz"
METADATA_FILE = "ser_embedded.json"
VERSION_PREFIX = "ser-v1"


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
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.mean.shape[0])

    def logits(self, features: np.ndarray) -> np.ndarray:
        hidden = (np.atleast_2d(features).astype(np.float32) - self.mean) / self.scale
        for index, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            hidden = hidden @ w + b
            if index < len(self.weights) - 1:
                hidden = np.maximum(hidden, 0.0)
        return hidden

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        logits = self.logits(features).astype(np.float64) / max(self.temperature, 1e-3)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "mean": self.mean.astype(np.float32),
            "scale": self.scale.astype(np.float32),
            "temperature": np.array([self.temperature], dtype=np.float32),
        }
        for index, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            out[f"w{index}"] = w.astype(np.float32)
            out[f"b{index}"] = b.astype(np.float32)
        return out

    def digest(self) -> str:
        """sha256 over the arrays themselves (zip timestamps must not change the version)."""
        sha = hashlib.sha256()
        for name, array in sorted(self.arrays().items()):
            sha.update(name.encode())
            sha.update(np.ascontiguousarray(array).tobytes())
        sha.update(json.dumps(list(self.classes)).encode())
        return sha.hexdigest()

    @property
    def version(self) -> str:
        return f"{VERSION_PREFIX}+{self.digest()[:8]}"


def save(model: SoftmaxClassifier, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / WEIGHTS_FILE
    np.savez_compressed(weights_path, allow_pickle=False, **model.arrays())
    metadata = {
        **model.metadata,
        "classes": list(model.classes),
        "version": model.version,
        "weights_sha256": model.digest(),
        "n_layers": len(model.weights),
    }
    metadata_path = directory / METADATA_FILE
    metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n")
    return weights_path, metadata_path


def load(weights_path: Path) -> SoftmaxClassifier:
    """Load weights (``.npz``) and the JSON sidecar next to it; refuse inconsistent files."""
    metadata_path = weights_path.with_suffix(".json")
    metadata = json.loads(metadata_path.read_text())
    with np.load(weights_path, allow_pickle=False) as data:
        n_layers = int(metadata["n_layers"])
        model = SoftmaxClassifier(
            classes=tuple(metadata["classes"]),
            mean=data["mean"],
            scale=np.where(data["scale"] > 0, data["scale"], 1.0).astype(np.float32),
            weights=tuple(data[f"w{i}"] for i in range(n_layers)),
            biases=tuple(data[f"b{i}"] for i in range(n_layers)),
            temperature=float(data["temperature"][0]),
            metadata=metadata,
        )
    if model.weights[-1].shape[1] != len(model.classes):
        raise ValueError(
            f"{weights_path}: last layer has {model.weights[-1].shape[1]} outputs "
            f"for {len(model.classes)} classes"
        )
    return model
