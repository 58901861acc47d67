"""Tiny randomly initialised checkpoints of the real backend architectures, saved the way a
downloaded checkpoint sits on disk, plus real speech cut from the example call. No downloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.support import EXAMPLE
from worker.pipeline.contracts import SegmentInput

# A speech-emotion head's vocabulary as published checkpoints spell it, with one class we cannot
# map ("other") to exercise the unknown-label path.
CLASSIFIER_LABELS = ["neu", "hap", "sad", "ang", "fearful", "disgust", "surprised", "other"]


def speech_segments(count: int = 4, seconds: float = 2.0) -> list[SegmentInput]:
    """Real speech from the example call (channel 0), at absolute times in the call."""
    from worker.pipeline.media import decode

    audio = decode.decode(EXAMPLE, 16_000)
    mono = audio.samples[0]
    starts = [0.5 + 2.5 * i for i in range(count)]
    out = []
    for i, start in enumerate(starts):
        # Different lengths, so padding and sorting are exercised.
        length = seconds * (1.0 + 0.25 * (i % 3))
        lo, hi = int(start * 16_000), int((start + length) * 16_000)
        out.append(SegmentInput(key=f"seg-{i}", audio=mono[lo:hi].astype(np.float32), sample_rate=16_000,
                                start_s=start, end_s=start + (hi - lo) / 16_000, role="customer"))
    return out


def assert_result_contract(segment: SegmentInput, result: Any) -> None:
    """What every backend's answer for a segment must be: a canonical label, scores summing to 1, a
    confidence in [0, 1], evidence inside the segment's own span."""
    from worker.pipeline import labels

    assert result.label in labels.CANONICAL_LABELS
    assert abs(sum(result.scores.values()) - 1.0) < 1e-6
    assert 0.0 <= result.confidence <= 1.0
    for item in result.evidence:
        assert segment.start_s - 1e-6 <= item["start_s"] <= item["end_s"] <= segment.end_s + 1e-6
        assert item["text"]


def build_audio_classifier(path: Path, seed: int = 0) -> Path:
    """A wav2vec2 sequence classifier with a small conv stack and transformer, random weights."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer", do_stable_layer_norm=True,
        classifier_proj_size=16, num_labels=len(CLASSIFIER_LABELS),
        id2label=dict(enumerate(CLASSIFIER_LABELS)),
        label2id={label: i for i, label in enumerate(CLASSIFIER_LABELS)},
        use_weighted_layer_sum=False,
    )
    model = Wav2Vec2ForSequenceClassification(config).eval()
    model.save_pretrained(path)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(path)
    # Published checkpoints name themselves here; the backend's version starts with it.
    config_file = path / "config.json"
    stored = json.loads(config_file.read_text())
    stored["_name_or_path"] = "tiny-wav2vec2-emotion"
    config_file.write_text(json.dumps(stored))
    return path


OMNI_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
    "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>",
]
# Text the tiny byte-level BPE is trained on: the prompt's own words, the labels and the tags, so
# prompts tokenize into few tokens and each label starts with its own token.
_TOKENIZER_CORPUS = [
    "You are an expert in recognising human emotion from the voice. You listen carefully to tone, "
    "pitch, loudness, pace and wording before you decide. This is one speaker's turn from a "
    "customer-service call. As an emotion recognition expert, which emotion does the speaker convey "
    "most clearly? Choose exactly one of: neutral, happy, sad, angry, fear, disgust, surprise. Output "
    "your thinking process in <think> </think> tags and the final emotion, one word from the list, in "
    "<answer> </answer> tags.",
    "<think>The voice is loud and fast.</think><answer>angry</answer> <answer> neutral happy sad angry fear "
    "disgust surprise Neutral Happy Sad Angry Fear Disgust Surprise system user assistant",
    *[f"<answer>{label}</answer><answer>{label.capitalize()}</answer>"
      for label in ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")],
]


def build_omni_tokenizer(path: Path, special_tokens: list[str] | None = None,
                         corpus: list[str] | None = None) -> None:
    """A byte-level BPE (the Qwen2 tokenizer's kind) with Qwen2.5-Omni's special tokens (or the
    given ones), trained on the prompts' own words (or the given text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    special_tokens = special_tokens or OMNI_SPECIAL_TOKENS
    named = {"<|AUDIO|>": "audio_token", "<|audio_bos|>": "audio_bos_token",
             "<|audio_eos|>": "audio_eos_token", "<|IMAGE|>": "image_token", "<|VIDEO|>": "video_token",
             "<|vision_bos|>": "vision_bos_token", "<|vision_eos|>": "vision_eos_token"}

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator((corpus or _TOKENIZER_CORPUS) * 20, trainer=trainer)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        bos_token=None,
        extra_special_tokens={name: token for token, name in named.items() if token in special_tokens},
    )
    tokenizer.save_pretrained(path)


def build_omni(path: Path, seed: int = 0) -> Path:
    """A Qwen2.5-Omni thinker with tiny audio/vision/text towers, random weights, own tokenizer."""
    import torch
    from transformers import (
        AutoTokenizer,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        Qwen2VLImageProcessor,
        WhisperFeatureExtractor,
    )

    build_omni_tokenizer(path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in OMNI_SPECIAL_TOKENS}
    torch.manual_seed(seed)
    config = Qwen2_5OmniThinkerConfig(
        audio_config={"num_mel_bins": 128, "encoder_layers": 1, "encoder_attention_heads": 2,
                      "encoder_ffn_dim": 64, "d_model": 32, "output_dim": 32, "n_window": 100},
        vision_config={"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                       "out_hidden_size": 32, "fullatt_block_indexes": [0]},
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "rope_scaling": {"type": "default", "rope_type": "default", "mrope_section": [2, 3, 3]},
                     "max_position_embeddings": 4096},
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"], audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"], vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"], user_token_id=tokenizer.encode("user")[0],
    )
    model = Qwen2_5OmniThinkerForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=128, sampling_rate=16_000).save_pretrained(path)
    # Real Qwen2.5-Omni checkpoints keep the audio and image preprocessing in one
    # preprocessor_config.json: merge the Qwen2-VL image processor's settings into it the same way.
    config_file = path / "preprocessor_config.json"
    merged = {**Qwen2VLImageProcessor().to_dict(), **json.loads(config_file.read_text())}
    config_file.write_text(json.dumps(merged, indent=2))
    return path
