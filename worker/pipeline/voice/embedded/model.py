"""The default CPU backend: handcrafted + speaker-encoder features into a small shipped classifier.

Per-speaker normalisation: the infer stage has `speaker_reference` summarise up to 12 clips of one speaker
(feature mean/std); `predict` normalises each segment's features against its speaker's summary for
the `speaker` head and mixes its answer with the `plain` head's by how neutral the speaker's
baseline sounds (`classifier.EmbeddedWeights.combined`). Without a summary the `plain` head decides.
An adapted model (`callpulse adapt`) adds its residual head on top of either.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from worker.pipeline.contracts import EmotionResult, SegmentInput
from worker.pipeline.voice.embedded import classifier, features
from worker.pipeline.voice.result import result_from_raw

MAX_REFERENCE_CLIPS = 12


def default_weights_path() -> Path:
    """The weights shipped inside the package (worker/weights/)."""
    return Path(str(resources.files("worker").joinpath("weights", classifier.WEIGHTS_FILE)))


class EmbeddedEmotionModel:
    """EmotionModel over the model's own classes (RAVDESS eight + EmoDB boredom), folded to canonical."""

    name = "embedded"

    def __init__(self, model: classifier.EmbeddedWeights) -> None:
        spec = model.metadata.get("feature_spec")
        if spec != features.FEATURE_SPEC or model.n_features != features.N_FEATURES:
            raise ValueError(
                f"weights expect features {spec!r} ({model.n_features}), this build extracts "
                f"{features.FEATURE_SPEC!r} ({features.N_FEATURES}): retrain or reinstall"
            )
        self.model = model
        self.version = model.version
        self.classes = model.classes

    def speaker_reference(self, clips: list[np.ndarray], sample_rate: int) -> dict[str, Any]:
        """Summary of one speaker's speech (up to 12 clips, evenly spread if more are given)."""
        usable = [c for c in clips if np.asarray(c).size > 0]
        if len(usable) > MAX_REFERENCE_CLIPS:
            picks = np.linspace(0, len(usable) - 1, MAX_REFERENCE_CLIPS).round().astype(int)
            usable = [usable[i] for i in picks]
        matrix = features.extract_batch(usable, sample_rate) if usable else np.zeros((0, features.N_FEATURES))
        return {"feature_spec": features.FEATURE_SPEC, **classifier.summarise(matrix)}

    def usable_reference(self, reference: dict[str, Any] | None) -> bool:
        if not reference or reference.get("feature_spec") != features.FEATURE_SPEC:
            return False
        n = reference.get("n", 0)
        mean, std = reference.get("mean", []), reference.get("std", [])
        return bool(n >= 1 and len(mean) == len(std) == features.N_FEATURES)

    def probabilities(self, matrix: np.ndarray, references: list[dict[str, Any] | None]) -> np.ndarray:
        """Raw-class probabilities per row: both heads where a usable reference exists, the plain
        head alone elsewhere. A reference that includes the segment itself (`includes_segment`) is
        used without it."""
        n_rows = matrix.shape[0]
        ref_mean = np.zeros((n_rows, features.N_FEATURES))
        ref_std = np.zeros((n_rows, features.N_FEATURES))
        ref_n = np.zeros(n_rows)
        for row, reference in enumerate(references):
            if reference and reference.get("includes_segment") and self.usable_reference(reference):
                reference = classifier.leave_out(reference, matrix[row])
            if reference is not None and self.usable_reference(reference):
                ref_mean[row], ref_std[row] = reference["mean"], reference["std"]
                ref_n[row] = float(reference["n"])
        return self.model.combined(matrix, ref_mean, ref_std, ref_n)

    def predict(self, batch: list[SegmentInput]) -> list[EmotionResult]:
        if not batch:
            return []
        matrix = features.extract_batch([s.audio for s in batch], [s.sample_rate for s in batch])
        probabilities = self.probabilities(matrix, [s.speaker_reference for s in batch])
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
            "run `python -m training.voice` to produce them"
        )
    return EmbeddedEmotionModel(classifier.load(path))
