"""`omni` backend: a tiny random Qwen2.5-Omni thinker (own byte-level BPE tokenizer, Whisper feature
extractor) saved to disk, loaded through the production registry, generating on real speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from tests.backend_checkpoints import assert_result_contract, build_omni, speech_segments
from worker.pipeline import labels
from worker.pipeline.contracts import SegmentInput
from worker.pipeline.voice.generative.omni import AUDIO_WINDOW_S, OmniEmotionModel, audio_token_count
from worker.pipeline.voice.registry import load_backend


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_omni(tmp_path_factory.mktemp("qwen2.5-omni-thinker"))


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> OmniEmotionModel:
    loaded = load_backend("omni", checkpoint, "cpu", "auto", max_new_tokens=12)
    assert isinstance(loaded, OmniEmotionModel)
    return loaded


def test_generation_on_real_speech_keeps_the_contract(model: OmniEmotionModel, checkpoint: Path) -> None:
    segments = speech_segments(3)
    results = model.predict(segments)
    assert len(results) == 3 and model.name == "omni" and model.max_new_tokens == 12
    assert "@" in model.version
    assert load_backend("omni", checkpoint, "cpu", "auto", max_new_tokens=4).version == model.version
    for segment, result in zip(segments, results, strict=True):
        assert_result_contract(segment, result)
        # Random weights write gibberish: recorded as unknown, raw text kept, no confidence.
        if result.raw_label == "unknown":
            assert result.label == "neutral" and result.confidence == 0.0
            assert "raw output" in result.reasoning_text


def test_batched_generation_matches_one_by_one(model: OmniEmotionModel) -> None:
    """Left padding and per-chunk audio masks: a segment's generation does not depend on its batch."""
    segments = speech_segments(3)
    batched = [r.reasoning_text for r in model.predict(segments)]
    alone = [model.predict([s])[0].reasoning_text for s in segments]
    assert batched == alone


def test_long_segment_is_split_into_30s_windows_not_cut(model: OmniEmotionModel) -> None:
    rate = 16_000
    speech = speech_segments(1, seconds=4.0)[0].audio
    audio = np.tile(speech, int(np.ceil(32 * rate / len(speech))))[: 32 * rate]
    segment = SegmentInput(key="long", audio=audio, sample_rate=rate, start_s=100.0, end_s=132.0,
                           role="customer")
    prompted = model._prompt(segment)
    assert [len(c) for c in prompted.chunks] == [int(AUDIO_WINDOW_S * rate), 2 * rate]
    assert prompted.text.count(model.audio_bos) == 2
    assert_result_contract(segment, model.predict([segment])[0])
    # Whisper frames (10 ms hop) → tokens: 30 s of audio is 750 audio tokens, as in Qwen2.5-Omni.
    assert audio_token_count(3000) == 750


def test_parsed_answer_think_becomes_timed_evidence(model: OmniEmotionModel) -> None:
    segment = speech_segments(1)[0]
    text = ("<think>The caller's pitch climbs and she speaks quickly while repeating the order number."
            "</think><answer>Frustrated</answer>")
    result = model._result(segment, text, None)
    assert result.label == "angry" and result.raw_label == "Frustrated"
    assert result.confidence == pytest.approx(0.6)
    assert max(result.scores, key=result.scores.__getitem__) == "angry"
    think = [e for e in result.evidence if e["cue"] == "think"]
    assert len(think) == 1
    assert (think[0]["start_s"], think[0]["end_s"]) == (segment.start_s, segment.end_s)
    assert "pitch climbs" in think[0]["text"] and "00:00.5" in think[0]["text"]
    assert "Model reasoning: The caller's pitch climbs" in result.reasoning_text
    assert_result_contract(segment, result)


def test_label_probabilities_read_from_the_answer_token(model: OmniEmotionModel) -> None:
    tokenizer = model.tokenizer
    ids = tokenizer.encode("<think>x</think><answer>angry</answer>", add_special_tokens=False)
    position = len(tokenizer.encode("<think>x</think><answer>", add_special_tokens=False))
    assert tokenizer.decode(ids[:position]).endswith("<answer>")
    columns = model.label_columns
    assert set(columns) == set(labels.CANONICAL_LABELS)
    steps = np.zeros((len(ids), len(model.recorded_token_ids)), dtype=np.float32)
    steps[position, columns["angry"][0]] = 0.6
    steps[position, columns["sad"][0]] = 0.2
    steps[position, columns["fear"][0]] = 0.05
    scores = model._label_scores(ids, steps)
    assert scores is not None and abs(sum(scores.values()) - 1.0) < 1e-6
    assert scores["angry"] == pytest.approx(0.6 / 0.85) and scores["sad"] > scores["fear"] > scores["happy"]
    result = model._result(speech_segments(1)[0], tokenizer.decode(ids), scores)
    assert result.confidence == pytest.approx(scores["angry"])
    # Label tokens holding too little of the mass (the model was about to write something else).
    steps[position] = 0.01
    assert model._label_scores(ids, steps) is None


def test_recorder_sees_what_the_decoder_chose_from(model: OmniEmotionModel, monkeypatch) -> None:
    """During real generation the recorder keeps, per step and row, the label tokens' probabilities."""
    from worker.pipeline.voice.generative import common as generative

    recorders: list[generative.LabelProbabilityRecorder] = []

    class Spy(generative.LabelProbabilityRecorder):
        def __init__(self, token_ids) -> None:
            super().__init__(token_ids)
            recorders.append(self)

    monkeypatch.setattr(generative, "LabelProbabilityRecorder", Spy)
    segments = speech_segments(2)
    generated = model._generate([model._prompt(s) for s in segments])
    assert len(generated) == 2 and all(isinstance(text, str) for text, _ in generated)
    recorded = recorders[0].per_row()
    assert recorded.shape[0] == 2 and 1 <= recorded.shape[1] <= model.max_new_tokens
    assert recorded.shape[2] == len(model.recorded_token_ids)
    assert ((recorded >= 0) & (recorded <= 1)).all()


def test_loads_the_full_qwen2_5_omni_layout(checkpoint: Path, tmp_path: Path) -> None:
    """Published Qwen2.5-Omni checkpoints hold the thinker under `thinker_config` / `thinker.*`
    next to the talker; the backend must load that directory as it is."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    for item in checkpoint.iterdir():
        shutil.copy(item, tmp_path / item.name)
    thinker_config = json.loads((checkpoint / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "qwen2_5_omni", "architectures": ["Qwen2_5OmniForConditionalGeneration"],
        "thinker_config": thinker_config, "enable_audio_output": True,
    }))
    weights = load_file(checkpoint / "model.safetensors")
    save_file({f"thinker.{k}": v.contiguous() for k, v in weights.items()}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    _, info = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        tmp_path, local_files_only=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    full = load_backend("omni", tmp_path, "cpu", "auto", max_new_tokens=12)
    segment = speech_segments(1)[0]
    original = load_backend("omni", checkpoint, "cpu", "auto", max_new_tokens=12)
    assert full.predict([segment])[0].reasoning_text == original.predict([segment])[0].reasoning_text


def test_video_frames_go_into_the_prompt(model: OmniEmotionModel) -> None:
    """Audio+video segments: frames become image spans before the audio; audio-only ones stay as they
    were; a batch may mix both and each row still answers for itself."""
    from dataclasses import replace

    from worker.pipeline.contracts import VideoFrame

    assert model.uses_frames and model.image_processor is not None
    plain = speech_segments(2)
    rng = np.random.default_rng(0)
    frames = [VideoFrame(plain[0].start_s + 0.2 * k, rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
              for k in range(2)]
    with_video = replace(plain[0], frames=frames)
    prompted = model._prompt(with_video)
    assert prompted.text.count("{IMAGE}") == 2 and "frames from the speaker's video" in prompted.text
    assert prompted.text.index("{IMAGE}") < prompted.text.index("{AUDIO}")
    assert "{IMAGE}" not in model._prompt(plain[1]).text

    mixed = model.predict([with_video, plain[1]])
    for segment, result in zip([with_video, plain[1]], mixed, strict=True):
        assert_result_contract(segment, result)
    # The audio-only row is unaffected by its video batch-mate (left padding, per-row positions).
    assert mixed[1].reasoning_text == model.predict([plain[1]])[0].reasoning_text
    # 320×240 fits in FRAME_MAX_PIXELS; sides round to multiples of 28 px (14 px patches merged 2×2):
    # 252×308 px → 18×22 patches → 99 tokens.
    from worker.pipeline.voice.generative.omni import FRAME_MAX_PIXELS

    grid = model.image_processor(images=[frames[0].image], return_tensors="pt",
                                 size={"shortest_edge": 56 * 56, "longest_edge": FRAME_MAX_PIXELS})
    assert int(grid["image_grid_thw"].prod()) // 4 == 99
