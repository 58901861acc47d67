"""`audio-classifier` backend: any local transformers audio-classification checkpoint
(wav2vec2 / HuBERT / WavLM emotion heads) through the Auto classes, batched.

The checkpoint's own classes (config.id2label) are folded onto the canonical labels; a class we do
not know (e.g. "other", "xxx") keeps its raw name: its probability is left out of the canonical
scores but it can still be the reported raw_label, and it lowers the confidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker.pipeline import hf_common
from worker.pipeline.batching import OomGuard
from worker.pipeline.contracts import EmotionResult, SegmentInput
from worker.pipeline.voice.result import result_from_raw

NAME = "audio-classifier"
# wav2vec2-style conv front ends need at least one 25 ms receptive field (400 samples at 16 kHz).
MIN_SAMPLES = 400
DEFAULT_MAX_BATCH = 32


class AudioClassifierModel:
    """EmotionModel over a transformers audio-classification checkpoint."""

    name = NAME

    def __init__(
        self, model: Any, feature_extractor: Any, version: str, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        self.model = model
        self.feature_extractor = feature_extractor
        self.version = version
        self.sample_rate = int(getattr(feature_extractor, "sampling_rate", 16_000))
        self.classes = [str(model.config.id2label[i]) for i in range(int(model.config.num_labels))]
        # Checkpoints with a group-norm conv front end (wav2vec2-base style) were trained on
        # zero-padded input *without* a mask and their feature extractor says so; passing one
        # there changes their outputs. Sorting by length keeps that padding small.
        self.use_attention_mask = bool(getattr(feature_extractor, "return_attention_mask", True))
        self.guard = OomGuard(max_batch)

    def predict(self, batch: list[SegmentInput]) -> list[EmotionResult]:
        if not batch:
            return []
        waves = [self._wave(segment) for segment in batch]
        # Similar lengths side by side: less padding, and results come back in input order.
        order = sorted(range(len(batch)), key=lambda i: len(waves[i]))
        probabilities = self.guard.run(self._forward, [waves[i] for i in order])
        by_input: list[np.ndarray] = [np.empty(0)] * len(batch)
        for position, index in enumerate(order):
            by_input[index] = probabilities[position]
        return [self._result(segment, row) for segment, row in zip(batch, by_input, strict=True)]

    def _wave(self, segment: SegmentInput) -> np.ndarray:
        wave = hf_common.to_model_rate(segment.audio, segment.sample_rate, self.sample_rate)
        if wave.size < MIN_SAMPLES:
            wave = np.pad(wave, (0, MIN_SAMPLES - wave.size))
        return wave

    def _forward(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        inputs = self.feature_extractor(
            list(waves),
            sampling_rate=self.sample_rate,
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        device = self.model.device
        values = inputs["input_values"].to(device=device, dtype=self.model.dtype)
        kwargs: dict[str, Any] = {"input_values": values}
        if self.use_attention_mask and "attention_mask" in inputs:
            kwargs["attention_mask"] = inputs["attention_mask"].to(device)
        with torch.inference_mode():
            logits = self.model(**kwargs).logits
        # Softmax in fp32: bf16 logits lose the small probabilities the evidence text reports.
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return list(probs)

    def _result(self, segment: SegmentInput, probabilities: np.ndarray) -> EmotionResult:
        raw = {cls: float(p) for cls, p in zip(self.classes, probabilities, strict=True)}
        return result_from_raw(segment, raw, raw_mass_confidence=True)

def load_model(
    model_path: Path | None, device: str = "cpu", dtype: str = "auto", max_batch: int = DEFAULT_MAX_BATCH
) -> AudioClassifierModel:
    """Load a local checkpoint directory (local files only: no hub on these machines)."""
    ckpt = hf_common.open_checkpoint(model_path, NAME, device, dtype)
    transformers = ckpt.transformers
    feature_extractor = transformers.AutoFeatureExtractor.from_pretrained(ckpt.path, local_files_only=True)
    model = transformers.AutoModelForAudioClassification.from_pretrained(
        ckpt.path, local_files_only=True, dtype=ckpt.dtype
    )
    model.to(ckpt.device).eval()
    backend = AudioClassifierModel(model, feature_extractor, ckpt.version, max_batch)
    hf_common.warm_up(backend)
    return backend
