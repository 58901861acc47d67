"""`emotion2vec` backend: tiny random releases laid out like emotion2vec+ (config.yaml, model.pt,
tokens.txt), loaded through the production registry, run on real speech from the example call;
strict loading refuses anything that does not fit and says which keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.backend_checkpoints import assert_result_contract, speech_segments
from tests.funasr_checkpoints import EMOTION2VEC_TOKENS, build_emotion2vec
from worker.pipeline import labels
from worker.pipeline.voice.funasr.emotion2vec import Emotion2vecModel, load_model, read_classes
from worker.pipeline.voice.funasr.release import CheckpointMismatch
from worker.pipeline.voice.registry import BackendUnavailable, load_backend

RAW_CLASSES = ["angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown"]


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_emotion2vec(tmp_path_factory.mktemp("e2v") / "emotion2vec_plus_tiny")


@pytest.fixture(scope="module")
def model(release: Path) -> Emotion2vecModel:
    loaded = load_backend("emotion2vec", release, "cpu", "auto")
    assert isinstance(loaded, Emotion2vecModel)
    return loaded


def test_release_classes_and_label_map(release: Path, tmp_path: Path) -> None:
    assert read_classes(release) == RAW_CLASSES
    # The same classes written in English only, or in Chinese only, read the same.
    for lines in ([*RAW_CLASSES[:-1], "<unk>"], [t.split("/")[0] for t in EMOTION2VEC_TOKENS]):
        (tmp_path / "tokens.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        assert read_classes(tmp_path) == RAW_CLASSES
    mapped = {raw: labels.canonical(raw) for raw in RAW_CLASSES}
    assert mapped == {"angry": "angry", "disgusted": "disgust", "fearful": "fear", "happy": "happy",
                      "neutral": "neutral", "other": None, "sad": "sad", "surprised": "surprise",
                      "unknown": None}


def test_contract_on_real_speech_and_batches_like_alone(model: Emotion2vecModel, release: Path) -> None:
    segments = speech_segments(4)
    results = model.predict(segments)
    assert model.name == "emotion2vec"
    assert model.version.startswith("emotion2vec_plus_tiny@") and len(model.version.split("@")[1]) == 8
    for segment, result in zip(segments, results, strict=True):
        assert_result_contract(segment, result)
        assert result.raw_label in RAW_CLASSES
        assert result.evidence[0]["cue"] == "classifier"
        alone = model.predict([segment])[0]
        for label in labels.CANONICAL_LABELS:
            assert result.scores[label] == pytest.approx(alone.scores[label], abs=1e-5)
    # Different speech gives different answers (the network reads the audio, not a constant).
    assert len({round(r.scores["neutral"], 6) for r in results}) > 1


def test_unknown_and_other_stay_raw_and_lower_confidence(model: Emotion2vecModel) -> None:
    """Mass on `other`/`unknown` is left out of the canonical scores and out of the confidence."""
    segment = speech_segments(1)[0]
    with torch.no_grad():
        assert model.net.proj is not None
        weight, bias = model.net.proj.weight.clone(), model.net.proj.bias.clone()
        model.net.proj.weight.zero_()
        model.net.proj.bias.copy_(torch.tensor([0, 0, 0, 0, 1.0, 3.0, 0, 0, 0]))
        try:
            result = model.predict([segment])[0]
        finally:
            model.net.proj.weight.copy_(weight)
            model.net.proj.bias.copy_(bias)
    assert result.raw_label == "other"
    assert result.label == "neutral"
    probs = np.exp([0, 0, 0, 0, 1.0, 3.0, 0, 0, 0]) / np.exp([0, 0, 0, 0, 1.0, 3.0, 0, 0, 0]).sum()
    assert result.confidence == pytest.approx(probs[4], abs=1e-5)
    assert "raw: other" in result.evidence[0]["text"]


def test_wrapped_state_dict_loads_the_same(release: Path, tmp_path: Path, model: Emotion2vecModel) -> None:
    wrapped = build_emotion2vec(tmp_path / "wrapped", wrap="model")
    other = load_model(wrapped, "cpu")
    segment = speech_segments(1)[0]
    assert other.predict([segment])[0].scores == pytest.approx(model.predict([segment])[0].scores, abs=1e-6)


def _edit_weights(release: Path, tmp_path: Path, edit) -> Path:
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(release, copy)
    state = torch.load(copy / "model.pt", weights_only=True)
    edit(state)
    torch.save(state, copy / "model.pt")
    return copy


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.pop("blocks.1.mlp.fc2.weight"), r"1 weights missing: blocks\.1\.mlp\.fc2\.weight"),
    (lambda s: s.pop("modality_encoders.AUDIO.alibi_scale"),
     r"weights missing: modality_encoders\.AUDIO\.alibi_scale"),
    (lambda s: s.update({"blocks.9.attn.qkv.weight": torch.zeros(3, 3)}),
     r"1 unexpected weights: blocks\.9\.attn\.qkv\.weight"),
    (lambda s: s.update({"proj.weight": torch.zeros(4, 32), "proj.bias": torch.zeros(4)}),
     r"2 weights with another shape: proj\.bias \(4,\) ≠ \(9,\), proj\.weight \(4, 32\) ≠ \(9, 32\)"),
])
def test_strict_loading_names_what_does_not_match(release: Path, tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(CheckpointMismatch, match=message):
        load_backend("emotion2vec", _edit_weights(release, tmp_path, edit), "cpu", "auto")


def test_config_that_does_not_fit_the_weights_is_refused(release: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "deeper"
    shutil.copytree(release, copy)
    conf = yaml.safe_load((copy / "config.yaml").read_text())
    conf["model_conf"]["depth"] = 3
    (copy / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True))
    with pytest.raises(CheckpointMismatch, match=r"weights missing: blocks\.2\.attn\.proj\.bias"):
        load_backend("emotion2vec", copy, "cpu", "auto")


def test_headless_encoder_is_refused_as_backend_but_embeds(tmp_path: Path) -> None:
    base = build_emotion2vec(tmp_path / "emotion2vec_base", head=False)
    with pytest.raises(CheckpointMismatch, match=r"no tokens\.txt.*callpulse adapt --base"):
        load_backend("emotion2vec", base, "cpu", "auto")
    encoder = load_model(base, "cpu", require_head=False)
    segments = speech_segments(2)
    embeddings = encoder.embed(segments)
    assert embeddings.shape == (2, 32) and np.isfinite(embeddings).all()
    assert not np.allclose(embeddings[0], embeddings[1])
    # A head in model.pt without tokens.txt to name its classes is refused, not guessed.
    (tmp_path / "headed").mkdir()
    headed = build_emotion2vec(tmp_path / "headed")
    (headed / "tokens.txt").unlink()
    with pytest.raises(CheckpointMismatch, match=r"2 unexpected weights: proj\.bias, proj\.weight"):
        load_model(headed, "cpu", require_head=False)


def test_registry_refuses_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="CALLPULSE_MODEL_PATH"):
        load_backend("emotion2vec", None, "cpu", "auto")
    with pytest.raises(FileNotFoundError, match=r"no config\.yaml"):
        load_backend("emotion2vec", tmp_path, "cpu", "auto")
