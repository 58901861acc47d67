"""A tiny randomly initialised R1-Omni release laid out as the published one is on disk: the
checkpoint directory (config.json naming its towers, tokenizer, model.safetensors without the tower
weights, lm_head tied) beside SigLIP, Whisper and BERT-base directories saved by transformers
itself. Widths differ per part (vision 24, LM 32, Whisper 40, BERT 16) so a mixed-up projection
cannot line up by accident. No downloads."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.backend_checkpoints import build_omni_tokenizer
from worker.pipeline.voice.generative.r1_omni import layout

VISION_WIDTH, LM_WIDTH, AUDIO_WIDTH, BERT_WIDTH = 24, 32, 40, 16
IMAGE_SIZE, PATCH = 32, 8  # 4×4 patches → 2×2 = 4 tokens a frame after the connector
R1_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<vi_start>", "<vi_end>",
                     "<au_start>", "<au_end>"]
_CORPUS = [
    "You are a helpful assistant. As an emotional recognition expert; throughout the video, which "
    "emotion conveyed by the characters is the most obvious to you?  Output the thinking process in "
    "<think> </think> and final emotion in <answer> </answer> tags. system user assistant",
    *[f"<answer>{label}</answer><answer>{label.capitalize()}</answer>"
      for label in ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise")],
]
_BERT_TEXT = ("as an emotional recognition expert ; throughout the video , which emotion conveyed by "
              "characters is most obvious to you ? output thinking process in < think > / and final "
              "answer tags .")


@dataclass(frozen=True)
class ReleaseSizes:
    """Each part's architecture; TINY for tests, HUMANOMNI_05B for benchmarks of the real thing."""

    vision: dict[str, Any] = field(default_factory=lambda: {
        "hidden_size": VISION_WIDTH, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": PATCH})
    lm: dict[str, Any] = field(default_factory=lambda: {
        "hidden_size": LM_WIDTH, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1})
    whisper: dict[str, Any] = field(default_factory=lambda: {
        "d_model": AUDIO_WIDTH, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64})
    bert: dict[str, Any] = field(default_factory=lambda: {
        "hidden_size": BERT_WIDTH, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32})
    vocab_size: int | None = None  # None: the test tokenizer's own size
    name: str = "tiny-r1-omni"


TINY = ReleaseSizes()
# HumanOmni-0.5B as the release's training script builds it: Qwen2-0.5B, google/siglip-base-patch16-224,
# openai/whisper-large-v3's encoder, bert-base-uncased (their published configs).
HUMANOMNI_05B = ReleaseSizes(
    vision={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
            "image_size": 224, "patch_size": 16},
    lm={"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
        "num_key_value_heads": 2},
    whisper={"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120},
    bert={"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    vocab_size=151_936, name="humanomni-0.5b-random",
)


# A ChatML template that adds a default system turn when none is given, as Qwen2's does.
QWEN2_STYLE_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_towers(root: Path, seed: int = 0, sizes: ReleaseSizes = TINY) -> dict[str, Path]:
    """SigLIP (text + vision, as google/siglip-base-patch16-224 is published), Whisper (encoder +
    decoder, as openai/whisper-large-v3) and BERT-base-style directories with their processors."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    torch.manual_seed(seed)
    dirs = {name: root / name for name in ("siglip-tiny", "whisper-tiny", "bert-base-uncased")}
    siglip = SiglipConfig(
        vision_config=sizes.vision,
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 64, "max_position_embeddings": 16},
    )
    SiglipModel(siglip).save_pretrained(dirs["siglip-tiny"])
    side = sizes.vision["image_size"]
    processor = SiglipImageProcessor(size={"height": side, "width": side})
    processor.save_pretrained(dirs["siglip-tiny"])
    whisper = WhisperConfig(
        **sizes.whisper, vocab_size=128, num_mel_bins=128, decoder_layers=1, decoder_attention_heads=2,
        decoder_ffn_dim=64,  # the decoder is never run: minimal
        max_source_positions=1500, max_target_positions=32, decoder_start_token_id=1, pad_token_id=0,
        bos_token_id=1, eos_token_id=2,
    )
    WhisperForConditionalGeneration(whisper).save_pretrained(dirs["whisper-tiny"])
    WhisperFeatureExtractor(feature_size=128, sampling_rate=16_000).save_pretrained(dirs["whisper-tiny"])
    bert_dir = dirs["bert-base-uncased"]
    bert_dir.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(_BERT_TEXT.split())]
    (bert_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(bert_dir / "vocab.txt"), model_max_length=64).save_pretrained(bert_dir)
    BertConfig(vocab_size=len(vocab), max_position_embeddings=64, **sizes.bert).save_pretrained(bert_dir)
    return dirs


def release_config(vocab_size: int, sizes: ReleaseSizes = TINY) -> dict[str, object]:
    """config.json as the release writes it: Qwen2 fields, the tower names, the connector's type."""
    return {
        "_name_or_path": sizes.name, "architectures": ["HumanOmniQwen2ForCausalLM"],
        "model_type": "HumanOmni_qwen2", "vocab_size": sizes.vocab_size or vocab_size, **sizes.lm,
        "max_position_embeddings": 32768, "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "torch_dtype": "float32",
        "mm_vision_tower": "google/siglip-tiny", "mm_audio_tower": "/mnt/trainer/whisper-tiny",
        "mm_hidden_size": sizes.vision["hidden_size"], "audio_hidden_size": sizes.whisper["d_model"],
        "mm_projector_type": "all_in_one_small", "mm_audio_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "num_frames": 8, "mm_use_x_start_end": True,
    }


def build_release(root: Path, seed: int = 0, towers_inside: bool = False, sizes: ReleaseSizes = TINY) -> Path:
    """The checkpoint directory `root/R1-Omni-tiny` plus its tower directories beside it.
    `towers_inside`: also save the tower weights in model.safetensors (as a trainer's save does)."""
    import torch
    from safetensors.torch import save_file
    from transformers import (
        AutoTokenizer,
        BertConfig,
        GenerationConfig,
        Qwen2Config,
        SiglipVisionConfig,
        WhisperConfig,
    )

    dirs = build_towers(root, seed, sizes)
    path = root / "R1-Omni-tiny"
    build_omni_tokenizer(path, R1_SPECIAL_TOKENS, _CORPUS)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tokenizer.chat_template = QWEN2_STYLE_TEMPLATE
    tokenizer.save_pretrained(path)
    config = release_config(len(tokenizer), sizes)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    GenerationConfig(eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>")],
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(path)
    torch.manual_seed(seed + 1)
    lm_config = Qwen2Config(**{k: v for k, v in config.items() if k not in ("model_type", "architectures")})
    lm = layout.build(lm_config, SiglipVisionConfig.from_pretrained(dirs["siglip-tiny"]),
                      WhisperConfig.from_pretrained(dirs["whisper-tiny"]),
                      BertConfig.from_pretrained(dirs["bert-base-uncased"]), sizes.vision["hidden_size"],
                      sizes.whisper["d_model"])
    if towers_inside:  # the towers as the trainer had them loaded: the published tower weights
        from worker.pipeline.voice.generative.r1_omni.weights import load_tower

        load_tower(lm.model.vision_tower.vision_tower, dirs["siglip-tiny"], ("",), "SigLIP")
        load_tower(lm.model.audio_tower.audio_tower.encoder, dirs["whisper-tiny"], ("model.encoder.",),
                   "Whisper encoder")
    state = {k: v.contiguous() for k, v in lm.state_dict().items() if k != "lm_head.weight"}
    if not towers_inside:
        towers = (layout.VISION_PREFIX, layout.AUDIO_PREFIX)
        state = {k: v for k, v in state.items() if not k.startswith(towers)}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path
