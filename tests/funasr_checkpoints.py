"""Tiny randomly initialised releases laid out like the FunASR model directories users download
(emotion2vec / emotion2vec+, SenseVoice-Small): the same file names and formats (config.yaml,
model.pt state dict, tokens.txt / am.mvn / sentencepiece model) and the same state-dict keys, only
smaller. Built with this project's own modules, then saved the way the release stores them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# emotion2vec+'s tokens.txt: Chinese/English pairs in head order, `<unk>` last.
EMOTION2VEC_TOKENS = ["生气/angry", "厌恶/disgusted", "恐惧/fearful", "开心/happy", "中立/neutral",
                      "其他/other", "难过/sad", "吃惊/surprised", "<unk>"]


def emotion2vec_conf(embed_dim: int = 32, depth: int = 2, heads: int = 4, prenet: int = 1) -> dict[str, Any]:
    """config.yaml's shape as released (training-only fields included: the loader must ignore them)."""
    return {
        "model": "Emotion2vec",
        "model_conf": {
            "loss_beta": 0.0, "depth": depth, "num_heads": heads, "norm_eps": 1e-5, "norm_affine": True,
            "encoder_dropout": 0.1, "post_mlp_drop": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
            "dropout_input": 0.0, "layerdrop": 0.05, "embed_dim": embed_dim, "mlp_ratio": 4.0,
            "layer_norm_first": False, "average_top_k_layers": depth, "end_of_block_targets": False,
            "clone_batch": 8, "ema_decay": 0.999, "supported_modality": "AUDIO", "cls_type": "chunk",
            "normalize": True,
            "modalities": {"audio": {
                "type": "AUDIO", "prenet_depth": prenet, "prenet_layerdrop": 0.05, "prenet_dropout": 0.1,
                "num_extra_tokens": 4, "init_extra_token_zero": True, "mask_prob": 0.5, "mask_length": 5,
                "use_alibi_encoder": True, "alibi_scale": 1.0, "learned_alibi": False,
                "learned_alibi_scale": True, "learned_alibi_scale_per_head": True,
                "learned_alibi_scale_per_layer": False, "num_alibi_heads": heads, "model_depth": depth,
                "decoder": {"decoder_dim": 16, "decoder_groups": 4, "decoder_kernel": 7, "decoder_layers": 2,
                            "input_dropout": 0.1, "add_positions_masked": False, "add_positions_all": False,
                            "decoder_residual": True, "projection_layers": 1, "projection_ratio": 2.0},
                "extractor_mode": "layer_norm",
                "feature_encoder_spec": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]",
                "conv_pos_width": 15, "conv_pos_groups": 4, "conv_pos_depth": 5, "conv_pos_pre_ln": False,
            }},
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>"},
    }


def build_emotion2vec(path: Path, seed: int = 0, head: bool = True, wrap: str | None = None,
                      conf: dict[str, Any] | None = None) -> Path:
    """An emotion2vec+ release (or, head=False, the self-supervised emotion2vec base: no tokens.txt,
    no `proj`). Includes the pre-training decoder's tensors, as fairseq-trained saves do."""
    import torch

    from worker.pipeline.voice.funasr.emotion2vec_net import Emotion2vecConfig, Emotion2vecNet

    path.mkdir(parents=True, exist_ok=True)
    conf = conf or emotion2vec_conf()
    (path / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True), encoding="utf-8")
    if head:
        (path / "tokens.txt").write_text("\n".join(EMOTION2VEC_TOKENS) + "\n", encoding="utf-8")
    torch.manual_seed(seed)
    cfg = Emotion2vecConfig.from_release(conf["model_conf"])
    net = Emotion2vecNet(cfg, len(EMOTION2VEC_TOKENS) if head else 0)
    for name, param in net.named_parameters():  # the release's values are far from init: so are ours
        if name.endswith("alibi_scale"):
            param.data.uniform_(0.5, 1.5)
        elif name.endswith("extra_tokens"):
            param.data.normal_()
    state = dict(net.state_dict())
    decoder = conf["model_conf"]["modalities"]["audio"]["decoder"]
    dim, d = cfg.embed_dim, decoder["decoder_dim"]
    for i in range(decoder["decoder_layers"]):
        state[f"modality_encoders.AUDIO.decoder.blocks.{i}.0.weight"] = torch.randn(
            d, (dim if i == 0 else d) // decoder["decoder_groups"], decoder["decoder_kernel"])
        state[f"modality_encoders.AUDIO.decoder.blocks.{i}.0.bias"] = torch.randn(d)
    state["modality_encoders.AUDIO.decoder.proj.weight"] = torch.randn(dim, d)
    state["modality_encoders.AUDIO.decoder.proj.bias"] = torch.randn(dim)
    torch.save({wrap: state} if wrap else state, path / "model.pt")
    (path / "configuration.json").write_text('{"framework": "pytorch", "task": "emotion-recognition"}')
    return path
