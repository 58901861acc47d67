"""The default CPU backend: handcrafted + speaker-encoder features into a small shipped classifier."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from worker.pipeline.contracts import EmotionResult, SegmentInput
from worker.pipeline.emotion import classifier, features
from worker.pipeline.emotion.result import result_from_raw


def default_weights_path() -> Path:
    """The weights shipped inside the package (worker/weights/)."""
    return Path(str(resources.files("worker").joinpath("weights", classifier.WEIGHTS_FILE)))


class EmbeddedEmotionModel:
    """EmotionModel over the model's own classes (RAVDESS eight + EmoDB boredom), folded to canonical."""

    name = "embedded"

    def __init__(self, model: classifier.SoftmaxClassifier) -> None:
        spec = model.metadata.get("feature_spec")
        if spec != features.FEATURE_SPEC or model.n_features != features.N_FEATURES:
            raise ValueError(
                f"weights expect features {spec!r} ({model.n_features}), this build extracts "
                f"{features.FEATURE_SPEC!r} ({features.N_FEATURES}): retrain or reinstall"
            )
        self.model = model
        self.version = model.version
        self.classes = model.classes

    def predict(self, batch: list[SegmentInput]) -> list[EmotionResult]:
        if not batch:
            return []
        matrix = features.extract_batch([s.audio for s in batch], [s.sample_rate for s in batch])
        probabilities = self.model.predict_proba(matrix)
        return [self._result(segment, row) for segment, row in zip(batch, probabilities, strict=True)]

    def _result(self, segment: SegmentInput, probabilities: np.ndarray) -> EmotionResult:
        raw = {cls: float(p) for cls, p in zip(self.classes, probabilities, strict=True)}
        return result_from_raw(segment, raw)

def load_model(device: str = "cpu", weights_path: Path | None = None) -> EmbeddedEmotionModel:
    """Load the shipped (or given) weights. The embedded model always runs on CPU: `device` is
    accepted for interface symmetry with the GPU backends and otherwise ignored."""
    path = weights_path or default_weights_path()
    if path.is_dir():
        path = path / classifier.WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"embedded emotion weights not found at {path}; "
            "run `python -m worker.pipeline.emotion.training` to produce them"
        )
    return EmbeddedEmotionModel(classifier.load(path))
