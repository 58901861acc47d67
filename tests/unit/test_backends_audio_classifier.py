"""`audio-classifier` backend: a tiny random wav2vec2 emotion head saved to disk, loaded through the
production registry (local files only), run on real speech from the example call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from tests.backend_checkpoints import CLASSIFIER_LABELS, build_audio_classifier, speech_segments
from worker.pipeline import labels
from worker.pipeline.voice.audio_classifier import AudioClassifierModel
from worker.pipeline.voice.registry import BackendUnavailable, load_backend


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_audio_classifier(tmp_path_factory.mktemp("wav2vec2-emotion"))


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> AudioClassifierModel:
    loaded = load_backend("audio-classifier", checkpoint, "cpu", "auto")
    assert isinstance(loaded, AudioClassifierModel)
    return loaded


def test_contract_on_real_speech(model: AudioClassifierModel, checkpoint: Path) -> None:
    segments = speech_segments(4)
    results = model.predict(segments)
    assert len(results) == len(segments)
    assert model.name == "audio-classifier"
    assert model.version.startswith("tiny-wav2vec2-emotion@") and len(model.version.split("@")[1]) == 8
    assert load_backend("audio-classifier", checkpoint, "cpu", "float32").version == model.version
    for segment, result in zip(segments, results, strict=True):
        assert result.label in labels.CANONICAL_LABELS
        assert set(result.scores) == set(labels.CANONICAL_LABELS)
        assert abs(sum(result.scores.values()) - 1.0) < 1e-6
        assert result.raw_label in CLASSIFIER_LABELS
        assert 0.0 <= result.confidence <= 1.0
        assert result.valence is not None and -1.0 <= result.valence <= 1.0
        assert result.arousal is not None and 0.0 <= result.arousal <= 1.0
        assert result.evidence[0]["cue"] == "classifier"
        for item in result.evidence:
            assert segment.start_s - 1e-6 <= item["start_s"] <= item["end_s"] <= segment.end_s + 1e-6
            assert item["modality"] == "audio" and item["text"]
        assert result.reasoning_text.startswith(f"Labelled {result.label}")
    # Prosody cues come with the classifier item wherever there is voiced speech.
    assert any(len(result.evidence) > 1 for result in results)


def test_padded_batch_matches_single_segments(model: AudioClassifierModel) -> None:
    """Attention masks keep padding out: a segment scores the same alone and in a mixed batch."""
    segments = speech_segments(4)
    batched = model.predict(segments)
    for segment, together in zip(segments, batched, strict=True):
        alone = model.predict([segment])[0]
        for label in labels.CANONICAL_LABELS:
            assert together.scores[label] == pytest.approx(alone.scores[label], abs=1e-4)


def test_unknown_raw_label_is_kept_but_excluded(model: AudioClassifierModel) -> None:
    segment = speech_segments(1)[0]
    probabilities = np.array([0.05, 0.05, 0.15, 0.05, 0.0, 0.0, 0.0, 0.70])  # "other" on top
    result = model._result(segment, probabilities)
    assert result.raw_label == "other"
    assert result.label == "sad" and result.scores["sad"] == pytest.approx(0.5)
    assert result.confidence == pytest.approx(0.15)  # the raw mass behind "sad", not 0.5
    assert "raw: other" in result.evidence[0]["text"]


def test_cuda_out_of_memory_halves_the_batch(model: AudioClassifierModel, monkeypatch) -> None:
    import torch

    segments = speech_segments(4)
    expected = [r.scores for r in model.predict(segments)]
    real_forward = model._forward
    sizes: list[int] = []

    def forward_with_small_memory(waves):
        sizes.append(len(waves))
        if len(waves) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(waves)

    monkeypatch.setattr(model, "_forward", forward_with_small_memory)
    monkeypatch.setattr(model.guard, "max_batch", 4)
    results = model.predict(segments)
    assert sizes[:3] == [4, 2, 1] and model.guard.max_batch == 1
    for got, want in zip(results, expected, strict=True):
        assert got.scores == pytest.approx(want, abs=1e-4)


def test_registry_refuses_missing_or_wrong_paths(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="CALLPULSE_MODEL_PATH"):
        load_backend("audio-classifier", None, "cpu", "auto")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_backend("audio-classifier", tmp_path, "cpu", "auto")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_backend("r1-omni", tmp_path, "cpu", "auto")


def test_missing_transformers_is_backend_unavailable(checkpoint: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails
    for backend in ("audio-classifier", "omni", "r1-omni"):
        with pytest.raises(BackendUnavailable, match=r"pip install 'callpulse\[gpu\]'"):
            load_backend(backend, checkpoint, "cpu", "auto")


def test_version_hashes_every_shard(checkpoint: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    from worker.pipeline.hf_common import checkpoint_version

    def weights_hash(path: Path) -> str:
        return checkpoint_version(path).split("@")[1]

    def save_sharded(model, out: Path) -> Path:
        model.save_pretrained(out, max_shard_size="100KB")
        AutoFeatureExtractor.from_pretrained(checkpoint).save_pretrained(out)
        assert (out / "model.safetensors.index.json").is_file()
        return out

    model = AutoModelForAudioClassification.from_pretrained(checkpoint, local_files_only=True)
    sharded = save_sharded(model, tmp_path / "a")
    assert weights_hash(sharded) == weights_hash(save_sharded(model, tmp_path / "b"))
    # Same architecture, same shard layout (identical index), one changed tensor: a new version.
    with torch.no_grad():
        model.classifier.bias.add_(0.5)
    changed = save_sharded(model, tmp_path / "c")
    assert weights_hash(changed) != weights_hash(sharded)
    assert load_backend("audio-classifier", changed, "cpu", "auto").predict(speech_segments(1))
