"""emotion2vec's network, written for this project from the published description and checkpoint
layout (data2vec 2.0 audio encoder, as released for FunASR): a wav2vec-style convolutional feature
encoder, a 5-layer convolutional relative position encoder, learned "extra" tokens, ALiBi attention
biases with a learned per-head scale, a pre-net of transformer blocks and the main blocks, then
(emotion2vec+) a linear head over the mean of the frame features.

Module names mirror the release's state-dict keys so strict loading is a plain key comparison.
Batches are padded: padded frames are masked out of attention and re-zeroed between the position
convolutions, so a segment scores the same alone as in a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Emotion2vecConfig:
    embed_dim: int = 768
    depth: int = 8
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-5
    layer_norm_first: bool = False
    normalize: bool = True  # layer-norm the waveform first, as the release's inference does
    conv_layers: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    extractor_mode: str = "layer_norm"
    prenet_depth: int = 4
    num_extra_tokens: int = 10
    conv_pos_width: int = 95
    conv_pos_groups: int = 16
    conv_pos_depth: int = 5
    use_alibi: bool = True
    num_alibi_heads: int = 12
    alibi_scale_per_head: bool = True

    @classmethod
    def from_release(cls, model_conf: dict[str, Any]) -> Emotion2vecConfig:
        """From config.yaml's `model_conf` (unknown training-only fields are ignored)."""
        audio = dict((model_conf.get("modalities") or {}).get("audio") or {})
        spec = audio.get("feature_encoder_spec")
        conv = cls.conv_layers if spec is None else _conv_spec(str(spec))
        if any(audio.get(k) for k in ("conv_pos_pre_ln", "learned_alibi", "learned_alibi_scale_per_layer")):
            raise ValueError("emotion2vec: conv_pos_pre_ln / learned_alibi / per-layer ALiBi scale layouts "
                             "are not implemented (the released checkpoints use none of them)")
        heads = int(model_conf.get("num_heads", cls.num_heads))
        return cls(
            embed_dim=int(model_conf.get("embed_dim", cls.embed_dim)),
            depth=int(model_conf.get("depth", cls.depth)),
            num_heads=heads,
            mlp_ratio=float(model_conf.get("mlp_ratio", cls.mlp_ratio)),
            norm_eps=float(model_conf.get("norm_eps", cls.norm_eps)),
            layer_norm_first=bool(model_conf.get("layer_norm_first", cls.layer_norm_first)),
            normalize=bool(model_conf.get("normalize", cls.normalize)),
            conv_layers=conv,
            extractor_mode=str(audio.get("extractor_mode", cls.extractor_mode)),
            prenet_depth=int(audio.get("prenet_depth", cls.prenet_depth)),
            num_extra_tokens=int(audio.get("num_extra_tokens", cls.num_extra_tokens)),
            conv_pos_width=int(audio.get("conv_pos_width", cls.conv_pos_width)),
            conv_pos_groups=int(audio.get("conv_pos_groups", cls.conv_pos_groups)),
            conv_pos_depth=int(audio.get("conv_pos_depth", cls.conv_pos_depth)),
            use_alibi=bool(audio.get("use_alibi_encoder", cls.use_alibi)),
            num_alibi_heads=int(audio.get("num_alibi_heads", heads)),
            alibi_scale_per_head=bool(audio.get("learned_alibi_scale_per_head", cls.alibi_scale_per_head)),
        )


def _conv_spec(spec: str) -> tuple[tuple[int, int, int], ...]:
    """The release writes its conv stack as a Python expression ("[(512, 10, 5)] + [(512, 3, 2)] * 4");
    we read it with a tiny evaluator over lists of int triples instead of eval()."""
    layers: list[tuple[int, int, int]] = []
    for term in spec.replace(" ", "").split("+"):
        body, _, times = term.partition("*")
        if not (body.startswith("[") and body.endswith("]")):
            raise ValueError(f"emotion2vec: cannot read feature_encoder_spec {spec!r}")
        triples = [tuple(int(v) for v in t.strip("()").split(",")) for t in body[1:-1].split("),(")]
        if any(len(t) != 3 for t in triples):
            raise ValueError(f"emotion2vec: cannot read feature_encoder_spec {spec!r}")
        layers.extend([(t[0], t[1], t[2]) for t in triples] * (int(times) if times else 1))
    return tuple(layers)


def _channel_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A LayerNorm/GroupNorm of the conv stack over the channels of (B, C, T), in fp32 like the release."""
    if isinstance(norm, nn.GroupNorm):
        return cast(torch.Tensor, norm(x.float()).to(x.dtype))
    assert isinstance(norm, nn.LayerNorm)
    out = F.layer_norm(x.transpose(1, 2).float(), norm.normalized_shape, norm.weight.float(),
                       norm.bias.float(), norm.eps)
    return out.to(x.dtype).transpose(1, 2)


class _Identity(nn.Identity):
    pass


def _conv_block(n_in: int, n_out: int, kernel: int, stride: int, norm: str) -> nn.Sequential:
    # Index 0 the conv, 2 the norm: the release's key names (conv_layers.N.0 / .2.1 / .2).
    conv = nn.Conv1d(n_in, n_out, kernel, stride=stride, bias=False)
    if norm == "layer":
        return nn.Sequential(conv, _Identity(), nn.Sequential(_Identity(), nn.LayerNorm(n_out)))
    if norm == "group":
        return nn.Sequential(conv, _Identity(), nn.GroupNorm(n_out, n_out, affine=True))
    return nn.Sequential(conv)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return cast(torch.Tensor, self.proj(out.transpose(1, 2).reshape(b, n, c)))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.fc2(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """A data2vec "AltBlock": post-norm unless the config says layer_norm_first."""

    def __init__(self, cfg: Emotion2vecConfig) -> None:
        super().__init__()
        self.layer_norm_first = cfg.layer_norm_first
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = _Attention(cfg.embed_dim, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = _Mlp(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.attn(self.norm1(x), bias)
            return cast(torch.Tensor, x + self.mlp(self.norm2(x)))
        r = self.norm1(x + self.attn(x, bias))
        return cast(torch.Tensor, self.norm2(r + self.mlp(r)))


class _BlockEncoder(nn.Module):
    def __init__(self, cfg: Emotion2vecConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.prenet_depth))
        self.norm = None if cfg.layer_norm_first else nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)


class _LocalEncoder(nn.Module):
    def __init__(self, layers: list[nn.Sequential]) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList(layers)


class AudioEncoder(nn.Module):
    def __init__(self, cfg: Emotion2vecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = cfg.conv_layers[-1][0]
        layers, n_in = [], 1
        for i, (n_out, kernel, stride) in enumerate(cfg.conv_layers):
            norm = "layer" if cfg.extractor_mode == "layer_norm" else ("group" if i == 0 else "none")
            layers.append(_conv_block(n_in, n_out, kernel, stride, norm))
            n_in = n_out
        self.local_encoder = _LocalEncoder(layers)
        self.project_features = nn.Sequential(_Identity(), nn.LayerNorm(width),
                                              nn.Linear(width, cfg.embed_dim))
        self.pos_kernel = max(3, cfg.conv_pos_width // cfg.conv_pos_depth)
        self.relative_positional_encoder = nn.Sequential(_Identity(), *[
            nn.Sequential(nn.Conv1d(cfg.embed_dim, cfg.embed_dim, self.pos_kernel,
                                    padding=self.pos_kernel // 2, groups=cfg.conv_pos_groups))
            for _ in range(cfg.conv_pos_depth)])
        self.context_encoder = _BlockEncoder(cfg)
        self.extra_tokens = nn.Parameter(torch.zeros(1, cfg.num_extra_tokens, cfg.embed_dim)) \
            if cfg.num_extra_tokens > 0 else None
        self.alibi_scale = nn.Parameter(torch.ones(
            1, 1,
            cfg.num_alibi_heads if cfg.alibi_scale_per_head else 1, 1, 1)) if cfg.use_alibi else None

    def frames(self, lengths: torch.Tensor) -> torch.Tensor:
        for _, kernel, stride in self.cfg.conv_layers:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.clamp_min(0)


def alibi(heads: int, steps: int, device: torch.device) -> torch.Tensor:
    """Symmetric ALiBi: -|i-j| times a geometric slope per head (non-power-of-two head counts
    interleave the next power's slopes, as in the ALiBi paper)."""
    def powers(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]

    if math.log2(heads).is_integer():
        slopes = powers(heads)
    else:
        low = 2 ** math.floor(math.log2(heads))
        slopes = powers(low) + powers(2 * low)[0::2][: heads - low]
    pos = torch.arange(steps, device=device)
    distance = -(pos[None, :] - pos[:, None]).abs().float()
    return torch.tensor(slopes, device=device)[:, None, None] * distance[None]


class Emotion2vecNet(nn.Module):
    def __init__(self, cfg: Emotion2vecConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.modality_encoders = nn.ModuleDict({"AUDIO": AudioEncoder(cfg)})
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps) if cfg.layer_norm_first else None
        self.proj = nn.Linear(cfg.embed_dim, num_classes) if num_classes > 0 else None

    def audio(self) -> AudioEncoder:
        enc = self.modality_encoders["AUDIO"]
        assert isinstance(enc, AudioEncoder)
        return enc

    def embed(self, waves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Utterance embeddings (B, D): the mean of each segment's frame features over its own frames.
        `waves` (B, S) zero-padded, `lengths` (B,) samples."""
        enc = self.audio()
        cfg = self.cfg
        valid = torch.arange(waves.shape[1], device=waves.device)[None] < lengths[:, None]
        if cfg.normalize:  # per segment, over its own samples only
            count = lengths.clamp_min(1)[:, None].to(waves.dtype)
            mean = (waves * valid).sum(1, keepdim=True) / count
            var = (((waves - mean) * valid) ** 2).sum(1, keepdim=True) / count
            waves = ((waves - mean) / torch.sqrt(var + 1e-5)) * valid
        x = waves[:, None, :]
        for module in enc.local_encoder.conv_layers:
            layer = cast(nn.Sequential, module)
            x = layer[0](x)
            if len(layer) > 2:
                x = _channel_norm(layer[2][1] if isinstance(layer[2], nn.Sequential) else layer[2], x)
            x = F.gelu(x)
        frames = enc.frames(lengths)
        pad = torch.arange(x.shape[2], device=x.device)[None] >= frames[:, None]  # (B, T) True = padding
        x = enc.project_features[2](enc.project_features[1](x.transpose(1, 2)))
        x = x.masked_fill(pad[..., None], 0.0)
        y = x.transpose(1, 2)
        for block in list(enc.relative_positional_encoder)[1:]:
            y = cast(nn.Sequential, block)[0](y)
            if enc.pos_kernel % 2 == 0:
                y = y[:, :, :-1]
            y = F.gelu(F.layer_norm(y.transpose(1, 2), (y.shape[1],)).transpose(1, 2))
            y = y.masked_fill(pad[:, None, :], 0.0)
        x = x + y.transpose(1, 2)
        steps = x.shape[1]
        bias = torch.zeros(x.shape[0], cfg.num_heads, steps, steps, device=x.device)
        if enc.alibi_scale is not None:
            scaled = alibi(cfg.num_alibi_heads, steps, x.device) * enc.alibi_scale[0, 0].clamp_min(0)
            bias[:, : cfg.num_alibi_heads] += scaled
        n = cfg.num_extra_tokens
        if enc.extra_tokens is not None:
            x = torch.cat([enc.extra_tokens.expand(x.shape[0], -1, -1), x], dim=1)
            bias = F.pad(bias, (n, 0, n, 0))
            pad = F.pad(pad, (n, 0), value=False)
        bias = bias.masked_fill(pad[:, None, None, :], float("-inf"))
        if enc.context_encoder.norm is not None:
            x = enc.context_encoder.norm(x)
        for block in [*enc.context_encoder.blocks, *self.blocks]:
            x = block(x, bias)
        if self.norm is not None:
            x = self.norm(x)
        x, pad = x[:, n:], pad[:, n:]
        keep = (~pad)[..., None].to(x.dtype)
        return (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)

