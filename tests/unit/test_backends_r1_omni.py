"""`r1-omni` backend: a tiny random R1-Omni release (checkpoint + SigLIP, Whisper and BERT
directories beside it) loaded through the production registry with strict key matching, generating
on real speech and on frames."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers")

from tests.backend_checkpoints import assert_result_contract, speech_segments
from tests.r1_omni_checkpoint import AUDIO_WIDTH, BERT_WIDTH, LM_WIDTH, VISION_WIDTH, build_release
from worker.pipeline.contracts import SegmentInput, VideoFrame
from worker.pipeline.voice.generative.r1_omni import layout
from worker.pipeline.voice.generative.r1_omni.model import (
    AUDIO,
    INSTRUCTION,
    VIDEO,
    CheckpointMismatch,
    R1OmniEmotionModel,
)
from worker.pipeline.voice.registry import BackendUnavailable, load_backend


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_release(tmp_path_factory.mktemp("r1-omni"))


@pytest.fixture(scope="module")
def model(release: Path) -> R1OmniEmotionModel:
    loaded = load_backend("r1-omni", release, "cpu", "auto", max_new_tokens=12)
    assert isinstance(loaded, R1OmniEmotionModel)
    return loaded


def _regstage(prefix: str, c_in: int, c_out: int) -> dict[str, tuple[int, ...]]:
    """timm RegStage(depth=2) keys and shapes, as the connector's constructor arguments make them:
    bottleneck ratio 1, group width 1 (depthwise 3×3), SE at ¼ of the block's input width, a
    conv+norm shortcut only where the width changes, LayerNorm2d (weight and bias, no stats)."""
    keys: dict[str, tuple[int, ...]] = {}
    for block, width_in in (("b1", c_in), ("b2", c_out)):
        p = f"{prefix}.{block}"
        se = round(width_in / 4)
        keys |= {f"{p}.conv1.conv.weight": (c_out, width_in, 1, 1),
                 f"{p}.conv2.conv.weight": (c_out, 1, 3, 3), f"{p}.conv3.conv.weight": (c_out, c_out, 1, 1),
                 f"{p}.se.fc1.weight": (se, c_out, 1, 1), f"{p}.se.fc1.bias": (se,),
                 f"{p}.se.fc2.weight": (c_out, se, 1, 1), f"{p}.se.fc2.bias": (c_out,)}
        for conv in ("conv1", "conv2", "conv3"):
            keys |= {f"{p}.{conv}.bn.weight": (c_out,), f"{p}.{conv}.bn.bias": (c_out,)}
        if width_in != c_out:
            keys |= {f"{p}.downsample.conv.weight": (c_out, width_in, 1, 1),
                     f"{p}.downsample.bn.weight": (c_out,), f"{p}.downsample.bn.bias": (c_out,)}
    return keys


def _mlp(prefix: str, c_in: int, c_out: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.0.weight": (c_out, c_in), f"{prefix}.0.bias": (c_out,),
            f"{prefix}.2.weight": (c_out, c_out), f"{prefix}.2.bias": (c_out,)}


def test_connector_keys_are_the_releases(model: R1OmniEmotionModel) -> None:
    """The all_in_one_small connector's parameter names and shapes, written out from the release's
    constructor independently of r1_omni/layout.py: a renamed module here breaks loading there."""
    expected: dict[str, tuple[int, ...]] = {}
    for branch in ("video", "body"):
        expected |= _regstage(f"s1_{branch}", VISION_WIDTH, LM_WIDTH)
        expected |= _regstage(f"s2_{branch}", LM_WIDTH, LM_WIDTH)
        expected |= {f"sampler_{branch}.0.weight": (LM_WIDTH, LM_WIDTH, 2, 2, 2),
                     f"sampler_{branch}.0.bias": (LM_WIDTH,)}
        expected |= _mlp(f"readout_{branch}", LM_WIDTH, LM_WIDTH)
    expected |= _mlp("mlp_2xgelu_face", VISION_WIDTH, LM_WIDTH)
    actual = {k: tuple(v.shape) for k, v in model.body.mm_projector.state_dict().items()}
    assert actual == expected

    state = model.lm.state_dict()
    assert tuple(state["model.audio_projector.0.weight"].shape) == (LM_WIDTH, AUDIO_WIDTH)
    assert tuple(state["model.bert_gate.0.weight"].shape) == (3584, BERT_WIDTH)
    assert tuple(state["model.bert_gate.2.weight"].shape) == (3, 3584)
    for key in ("model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
                "model.audio_tower.audio_tower.encoder.conv1.weight", "model.bert_model.pooler.dense.weight",
                "model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight", "lm_head.weight"):
        assert key in state
    # Tied in the 0.5B release: lm_head is the embedding matrix, not a second copy.
    assert model.lm.lm_head.weight.data_ptr() == model.body.embed_tokens.weight.data_ptr()
    assert model.mix.shape == (1, 3) and abs(float(model.mix.sum()) - 1.0) < 1e-5


def _with_frames(segment: SegmentInput, count: int, seed: int = 0) -> SegmentInput:
    rng = np.random.default_rng(seed)
    frames = [VideoFrame(segment.start_s + 0.1 * k, rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
              for k in range(count)]
    return replace(segment, frames=frames)


def test_audio_and_video_segments_generate_and_batch_like_alone(model: R1OmniEmotionModel) -> None:
    plain = speech_segments(3)
    with_video = _with_frames(plain[0], 3)  # fewer frames than the model's 8: nearest repeated
    prompted = model._prompt(with_video)
    assert prompted.slots == [VIDEO, AUDIO] and len(prompted.frames) == model.frames_per_segment == 8
    assert prompted.pieces[0].endswith("<vi_start>") and prompted.pieces[1].startswith("<vi_end>")
    assert model._prompt(plain[1]).slots == [AUDIO]
    batch = [with_video, plain[1], plain[2]]
    results = model.predict(batch)
    for segment, result in zip(batch, results, strict=True):
        assert_result_contract(segment, result)
    assert "@" in model.version and model.version.startswith("tiny-r1-omni@")
    # Left padding and per-row positions: a row's generation does not depend on its batch-mates.
    alone = [model.predict([segment])[0].reasoning_text for segment in batch]
    assert [r.reasoning_text for r in results] == alone


def test_video_tokens_per_frame_and_long_audio_windows(model: R1OmniEmotionModel) -> None:
    segment = _with_frames(speech_segments(1)[0], 8)
    video = model._video_tokens([model._prompt(segment).frames])
    # 32 px frames, 8 px patches: a 4×4 grid, halved by the connector → 4 tokens × 8 frames.
    assert tuple(video.shape) == (1, 8 * layout.AllInOneSmall.tokens_per_frame(16), LM_WIDTH)
    rate = 16_000
    audio = np.tile(segment.audio, int(np.ceil(32 * rate / len(segment.audio))))[: 32 * rate]
    long = SegmentInput(key="long", audio=audio, sample_rate=rate, start_s=60.0, end_s=92.0, role="customer")
    prompted = model._prompt(long)
    assert [len(c) for c in prompted.chunks] == [30 * rate, 2 * rate] and prompted.slots == [AUDIO]
    # Whisper's 1500 frames per 30 s window, pooled 3× → 500 tokens each; both windows kept.
    assert tuple(model._audio_tokens(prompted.chunks).shape) == (2, 500, LM_WIDTH)
    assert_result_contract(long, model.predict([long])[0])


def test_towers_come_from_their_directories_over_checkpoint_copies(
    model: R1OmniEmotionModel, tmp_path: Path
) -> None:
    """As the release loads them: the tower directories win over the trainer's copies inside the
    checkpoint; the copies are used where a directory has no weights, and for the audio tower when
    the config says it was trained (unfreeze_mm_audio_tower)."""
    inside = build_release(tmp_path, towers_inside=True)
    segment = _with_frames(speech_segments(1)[0], 8)
    expected = model.predict([segment])[0].reasoning_text
    noisy = "model.audio_tower.audio_tower.encoder.layers.0.fc1.weight"
    _rewrite_weights(inside, lambda s: s.update({noisy: s[noisy] * 3}))
    assert load_backend("r1-omni", inside, "cpu", "auto", max_new_tokens=12
                        ).predict([segment])[0].reasoning_text == expected
    config = json.loads((inside / "config.json").read_text())
    (inside / "config.json").write_text(json.dumps({**config, "unfreeze_mm_audio_tower": True}))
    trained = load_backend("r1-omni", inside, "cpu", "auto", max_new_tokens=12)
    def fc1_mass(backend: Any) -> float:
        return float(backend.body.audio_tower.audio_tower.encoder.layers[0].fc1.weight.abs().sum())

    assert fc1_mass(trained) == pytest.approx(3 * fc1_mass(model), rel=1e-4)

    (inside / "config.json").write_text(json.dumps(config))
    _rewrite_weights(inside, lambda s: s.update({noisy: s[noisy] / 3}))
    for tower in ("siglip-tiny", "whisper-tiny"):  # directories now give only configs and processors
        for weights in (tmp_path / tower).glob("*.safetensors"):
            weights.unlink()
    alone = load_backend("r1-omni", inside, "cpu", "auto", max_new_tokens=12)
    assert alone.predict([segment])[0].reasoning_text == expected


def test_prompt_is_the_tokenizers_chat_template_with_wrapped_spans(model: R1OmniEmotionModel) -> None:
    pieces = model.prompts[(VIDEO, AUDIO)]
    text = pieces[0] + VIDEO + pieces[1] + AUDIO + pieces[2]
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<vi_start><video><vi_end>\n<au_start><audio><au_end>\n" + INSTRUCTION +
                    "<|im_end|>\n<|im_start|>assistant\n")
    audio_only = model.prompts[(AUDIO,)]
    assert len(audio_only) == 2 and VIDEO not in "".join(audio_only) and "<vi_start>" not in audio_only[0]
    assert model.eos_token_ids == [model.tokenizer.convert_tokens_to_ids("<|im_end|>")]


def _copy_release(release: Path, tmp_path: Path) -> Path:
    for item in release.parent.iterdir():
        shutil.copytree(item, tmp_path / item.name)
    return tmp_path / release.name


def _rewrite_weights(path: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path / "model.safetensors"))
    edit(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.update({"model.mm_projector.s1_video.b1.conv_1.conv.weight":
                         s.pop("model.mm_projector.s1_video.b1.conv1.conv.weight")}),
     "1 weights missing: model.mm_projector.s1_video.b1.conv1.conv.weight"),
    (lambda s: s.pop("model.bert_gate.2.bias"), "model.bert_gate.2.bias"),
    (lambda s: s.update({"model.feature_compressor.vlm_query_projector.weight":
                         s["model.bert_gate.2.bias"] * 1}),
     "1 unexpected weights: model.feature_compressor.vlm_query_projector.weight"),
    (lambda s: s.update({"model.audio_projector.0.weight": s["model.audio_projector.0.weight"][:, :8]}),
     "model.audio_projector.0.weight (32, 8) ≠ (32, 40)"),
    (lambda s: s.update({"model.vision_tower.vision_tower.vision_model.post_layernorm.bias":
                         s["model.bert_gate.2.bias"] * 1}),
     "tower model.vision_tower.vision_tower is partly"),
])
def test_strict_loading_names_what_does_not_match(release: Path, tmp_path: Path, edit, message: str) -> None:
    path = _copy_release(release, tmp_path)
    _rewrite_weights(path, edit)
    with pytest.raises(CheckpointMismatch, match="does not match") as failure:
        load_backend("r1-omni", path, "cpu", "auto", max_new_tokens=4)
    assert message in str(failure.value)


def test_the_audio_classification_head_around_whisper_is_allowed(release: Path, tmp_path: Path) -> None:
    """Trainer saves carry WhisperForAudioClassification's projector/classifier, which never run,
    and older transformers saved BERT's position_ids buffer as a weight."""
    import torch

    path = _copy_release(release, tmp_path)
    _rewrite_weights(path, lambda s: s.update({
        "model.audio_tower.audio_tower.projector.weight": s["model.bert_gate.2.bias"].clone(),
        "model.audio_tower.audio_tower.classifier.bias": s["model.bert_gate.2.bias"].clone(),
        "model.bert_model.embeddings.position_ids": torch.arange(64)[None]}))
    assert load_backend("r1-omni", path, "cpu", "auto", max_new_tokens=4).name == "r1-omni"


def test_missing_companion_directory_is_explained(release: Path, tmp_path: Path) -> None:
    path = _copy_release(release, tmp_path)
    # The release's README spells the folder with underscores.
    (tmp_path / "bert-base-uncased").rename(tmp_path / "bert_base_uncased")
    assert load_backend("r1-omni", path, "cpu", "auto", max_new_tokens=4).name == "r1-omni"
    shutil.rmtree(tmp_path / "bert_base_uncased")
    with pytest.raises(FileNotFoundError, match="BERT-base directory 'bert-base-uncased' was not found"):
        load_backend("r1-omni", path, "cpu", "auto")
    config = json.loads((path / "config.json").read_text())
    config["mm_projector_type"] = "all_in_one"
    shutil.copytree(release.parent / "bert-base-uncased", tmp_path / "bert-base-uncased")
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatch, match="'all_in_one'"):
        load_backend("r1-omni", path, "cpu", "auto")
    with pytest.raises(BackendUnavailable, match="local checkpoint directory"):
        load_backend("r1-omni", None, "cpu", "auto")


def test_infer_stage_samples_the_models_frame_count(model: R1OmniEmotionModel) -> None:
    from callpulse.settings import Settings
    from worker.stages.inference_inputs import frame_count, wants_frames

    settings = Settings(frames_per_segment=3)
    assert wants_frames(model) and frame_count(model, settings) == 8
    assert frame_count(object(), settings) == 3  # type: ignore[arg-type]
