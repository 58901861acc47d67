"""Tiny randomly initialised releases laid out like the FunASR model directories users download
(emotion2vec / emotion2vec+, SenseVoice-Small): the same file names and formats (config.yaml,
model.pt state dict, tokens.txt / am.mvn / sentencepiece model) and the same state-dict keys, only
smaller. Built with this project's own modules, then saved the way the release stores them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

# emotion2vec+'s tokens.txt: Chinese/English pairs in head order, `<unk>` last.
EMOTION2VEC_TOKENS = [
    "生气/angry",
    "厌恶/disgusted",
    "恐惧/fearful",
    "开心/happy",
    "中立/neutral",
    "其他/other",
    "难过/sad",
    "吃惊/surprised",
    "<unk>",
]


def emotion2vec_conf(embed_dim: int = 32, depth: int = 2, heads: int = 4, prenet: int = 1) -> dict[str, Any]:
    """config.yaml's shape as released (training-only fields included: the loader must ignore them)."""
    return {
        "model": "Emotion2vec",
        "model_conf": {
            "loss_beta": 0.0,
            "depth": depth,
            "num_heads": heads,
            "norm_eps": 1e-5,
            "norm_affine": True,
            "encoder_dropout": 0.1,
            "post_mlp_drop": 0.1,
            "attention_dropout": 0.1,
            "activation_dropout": 0.0,
            "dropout_input": 0.0,
            "layerdrop": 0.05,
            "embed_dim": embed_dim,
            "mlp_ratio": 4.0,
            "layer_norm_first": False,
            "average_top_k_layers": depth,
            "end_of_block_targets": False,
            "clone_batch": 8,
            "ema_decay": 0.999,
            "supported_modality": "AUDIO",
            "cls_type": "chunk",
            "normalize": True,
            "modalities": {
                "audio": {
                    "type": "AUDIO",
                    "prenet_depth": prenet,
                    "prenet_layerdrop": 0.05,
                    "prenet_dropout": 0.1,
                    "num_extra_tokens": 4,
                    "init_extra_token_zero": True,
                    "mask_prob": 0.5,
                    "mask_length": 5,
                    "use_alibi_encoder": True,
                    "alibi_scale": 1.0,
                    "learned_alibi": False,
                    "learned_alibi_scale": True,
                    "learned_alibi_scale_per_head": True,
                    "learned_alibi_scale_per_layer": False,
                    "num_alibi_heads": heads,
                    "model_depth": depth,
                    "decoder": {
                        "decoder_dim": 16,
                        "decoder_groups": 4,
                        "decoder_kernel": 7,
                        "decoder_layers": 2,
                        "input_dropout": 0.1,
                        "add_positions_masked": False,
                        "add_positions_all": False,
                        "decoder_residual": True,
                        "projection_layers": 1,
                        "projection_ratio": 2.0,
                    },
                    "extractor_mode": "layer_norm",
                    "feature_encoder_spec": "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]",
                    "conv_pos_width": 15,
                    "conv_pos_groups": 4,
                    "conv_pos_depth": 5,
                    "conv_pos_pre_ln": False,
                }
            },
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>"},
    }


def build_emotion2vec(
    path: Path, seed: int = 0, head: bool = True, wrap: str | None = None, conf: dict[str, Any] | None = None
) -> Path:
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
            d, (dim if i == 0 else d) // decoder["decoder_groups"], decoder["decoder_kernel"]
        )
        state[f"modality_encoders.AUDIO.decoder.blocks.{i}.0.bias"] = torch.randn(d)
    state["modality_encoders.AUDIO.decoder.proj.weight"] = torch.randn(dim, d)
    state["modality_encoders.AUDIO.decoder.proj.bias"] = torch.randn(dim)
    torch.save({wrap: state} if wrap else state, path / "model.pt")
    (path / "configuration.json").write_text('{"framework": "pytorch", "task": "emotion-recognition"}')
    return path


# SenseVoice's vocabulary: ordinary pieces first (id 0 `<unk>` is the CTC blank), then the rich
# tags the release appends (languages, emotions, events, text normalisation).
SENSEVOICE_WORD_PIECES = [
    "▁hello",
    "▁thank",
    "▁you",
    "▁for",
    "▁call",
    "ing",
    "▁the",
    "▁bill",
    "▁is",
    "▁wrong",
    "▁a",
    "▁b",
    "o",
    "e",
    "你",
    "好",
    "▁",
    "'s",
    ",",
    ".",
]
SENSEVOICE_TAGS = [
    "<|zh|>",
    "<|en|>",
    "<|yue|>",
    "<|ja|>",
    "<|ko|>",
    "<|nospeech|>",
    "<|HAPPY|>",
    "<|SAD|>",
    "<|ANGRY|>",
    "<|NEUTRAL|>",
    "<|FEARFUL|>",
    "<|DISGUSTED|>",
    "<|SURPRISED|>",
    "<|EMO_UNKNOWN|>",
    "<|Speech|>",
    "<|BGM|>",
    "<|Applause|>",
    "<|Laughter|>",
    "<|Cry|>",
    "<|Sneeze|>",
    "<|Breath|>",
    "<|Cough|>",
    "<|Sing|>",
    "<|Speech_Noise|>",
    "<|Event_UNK|>",
    "<|withitn|>",
    "<|woitn|>",
]
SENSEVOICE_BPE = "chn_jpn_yue_eng_ko_spectok.bpe.model"


def sensevoice_conf(size: int = 32, blocks: int = 3, tp_blocks: int = 2) -> dict[str, Any]:
    """config.yaml as released (the sizes shrunk; bpemodel/cmvn_file null, as downloaded)."""
    return {
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {
            "output_size": size,
            "attention_heads": 4,
            "linear_units": 2 * size,
            "num_blocks": blocks,
            "tp_blocks": tp_blocks,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
        },
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
            "cmvn_file": None,
        },
        "specaug": "SpecAugLFR",
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True, "ignore_nan_grad": True},
    }


def write_cmvn(path: Path, shift: list[float], scale: list[float]) -> None:
    """am.mvn in the Kaldi nnet1 text layout FunASR releases use."""
    dim = len(shift)
    path.write_text(
        f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n"
        f"<LearnRateCoef> 0 [ {' '.join(f'{v:.6f}' for v in shift)} ]\n<Rescale> {dim} {dim}\n"
        f"<LearnRateCoef> 0 [ {' '.join(f'{v:.6f}' for v in scale)} ]\n</Nnet>\n",
        encoding="utf-8",
    )


def build_sensevoice(
    path: Path, seed: int = 0, wrap: str | None = None, tags: list[str] | None = None
) -> Path:
    """A SenseVoice-Small release with a tiny encoder and a 50-piece vocabulary."""
    import numpy as np
    import torch

    from worker.pipeline.voice.funasr import spm
    from worker.pipeline.voice.funasr.sensevoice_net import SenseVoiceConfig, SenseVoiceNet

    path.mkdir(parents=True, exist_ok=True)
    conf = sensevoice_conf()
    (path / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True), encoding="utf-8")
    meta = {
        "framework": "pytorch",
        "task": "auto-speech-recognition",
        "model": {"type": "funasr"},
        "model_name_in_hub": {"ms": "iic/SenseVoiceSmall", "hf": "FunAudioLLM/SenseVoiceSmall"},
        "file_path_metas": {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"bpemodel": SENSEVOICE_BPE},
            "frontend_conf": {"cmvn_file": "am.mvn"},
        },
    }
    (path / "configuration.json").write_text(json.dumps(meta))
    pieces = [("<unk>", spm.UNKNOWN), ("<s>", spm.CONTROL), ("</s>", spm.CONTROL)]
    pieces += [(p, spm.NORMAL) for p in SENSEVOICE_WORD_PIECES]
    pieces += [(t, spm.USER_DEFINED) for t in (SENSEVOICE_TAGS if tags is None else tags)]
    spm.write(path / SENSEVOICE_BPE, pieces)
    # Typical log-mel statistics (mean about 10, spread about 3), so CMVN brings features near unit scale.
    rng = np.random.default_rng(seed)
    write_cmvn(path / "am.mvn", list(-10.0 + rng.normal(0, 0.5, 560)), list(0.3 + rng.uniform(0, 0.05, 560)))
    torch.manual_seed(seed)
    cfg = SenseVoiceConfig.from_release(conf["encoder_conf"], 560, len(pieces))
    net = SenseVoiceNet(cfg)
    state = dict(net.state_dict())
    torch.save({wrap: state} if wrap else state, path / "model.pt")
    return path
