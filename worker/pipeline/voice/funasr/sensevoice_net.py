"""SenseVoice-Small's network, written for this project from the released checkpoint layout: a
non-autoregressive SAN-M encoder (self-attention whose value path also runs through a depthwise
"FSMN" memory convolution) over 560-dim stacked filterbanks, a CTC projection, and a 16-row query
embedding. Four query vectors go in front of the audio: language, two learned slots for emotion and
audio event, and text normalisation (with / without ITN); the CTC output at those four positions
names the language, the emotion, the event and the normalisation, the rest are the words.

Module names mirror the release's state-dict keys (`encoder.encoders0.0.self_attn.fsmn_block.weight`,
`ctc.ctc_lo.weight`, `embed.weight`...), so strict loading is a plain key comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

# Rows of `embed`: 0 = automatic language; the release's language, event/emotion and text
# normalisation slots (the query vectors put in front of the audio).
LANGUAGE_QUERY = {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
EVENT_EMOTION_QUERY = (1, 2)
TEXTNORM_QUERY = {"withitn": 14, "woitn": 15}
QUERY_ROWS = 16
QUERIES = 4  # output frames that carry tags, not words


@dataclass(frozen=True)
class SenseVoiceConfig:
    input_size: int = 560
    output_size: int = 512
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 50
    tp_blocks: int = 20
    kernel_size: int = 11
    sanm_shift: int = 0
    vocab_size: int = 25055

    @classmethod
    def from_release(cls, encoder_conf: dict[str, Any], input_size: int, vocab_size: int) -> SenseVoiceConfig:
        return cls(
            input_size=input_size,
            output_size=int(encoder_conf.get("output_size", cls.output_size)),
            attention_heads=int(encoder_conf.get("attention_heads", cls.attention_heads)),
            linear_units=int(encoder_conf.get("linear_units", cls.linear_units)),
            num_blocks=int(encoder_conf.get("num_blocks", cls.num_blocks)),
            tp_blocks=int(encoder_conf.get("tp_blocks", cls.tp_blocks)),
            kernel_size=int(encoder_conf.get("kernel_size", cls.kernel_size)),
            sanm_shift=int(encoder_conf.get("sanm_shfit", encoder_conf.get("sanm_shift", cls.sanm_shift))),
            vocab_size=vocab_size,
        )


class _LayerNorm(nn.LayerNorm):
    """Computed in fp32 whatever the weights' dtype (the release does the same)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).to(x.dtype)


class SanmAttention(nn.Module):
    def __init__(self, heads: int, in_size: int, size: int, kernel: int, shift: int) -> None:
        super().__init__()
        self.heads = heads
        self.linear_q_k_v = nn.Linear(in_size, size * 3)
        self.linear_out = nn.Linear(size, size)
        self.fsmn_block = nn.Conv1d(size, size, kernel, groups=size, bias=False)
        left = (kernel - 1) // 2 + max(shift, 0)
        self.pad = (left, kernel - 1 - left)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """`keep` (B, T) 1.0 on real frames, 0.0 on padding."""
        b, t, _ = x.shape
        q, k, v = self.linear_q_k_v(x).chunk(3, dim=-1)
        mask = keep[..., None].to(x.dtype)
        v_kept = v * mask
        memory = self.fsmn_block(F.pad(v_kept.transpose(1, 2), self.pad)).transpose(1, 2)
        memory = (memory + v_kept) * mask
        d = q.shape[-1] // self.heads

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(b, t, self.heads, d).transpose(1, 2)

        attn_mask = torch.zeros(b, 1, 1, t, dtype=x.dtype, device=x.device).masked_fill(
            ~keep.bool()[:, None, None, :], float("-inf"))
        out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=attn_mask)
        return cast(torch.Tensor, self.linear_out(out.transpose(1, 2).reshape(b, t, -1)) + memory)


class FeedForward(nn.Module):
    def __init__(self, size: int, hidden: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.w_2(F.relu(self.w_1(x))))


class SanmLayer(nn.Module):
    """Pre-norm layer; the first one changes width (560 → 512) and so has no residual around attention."""

    def __init__(self, cfg: SenseVoiceConfig, in_size: int) -> None:
        super().__init__()
        size = cfg.output_size
        self.residual = in_size == size
        self.self_attn = SanmAttention(cfg.attention_heads, in_size, size, cfg.kernel_size, cfg.sanm_shift)
        self.feed_forward = FeedForward(size, cfg.linear_units)
        self.norm1 = _LayerNorm(in_size)
        self.norm2 = _LayerNorm(size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        attended = self.self_attn(self.norm1(x), keep)
        x = x + attended if self.residual else attended
        return cast(torch.Tensor, x + self.feed_forward(self.norm2(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: SenseVoiceConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoders0 = nn.ModuleList([SanmLayer(cfg, cfg.input_size)])
        self.encoders = nn.ModuleList(SanmLayer(cfg, cfg.output_size) for _ in range(cfg.num_blocks - 1))
        self.tp_encoders = nn.ModuleList(SanmLayer(cfg, cfg.output_size) for _ in range(cfg.tp_blocks))
        self.after_norm = _LayerNorm(cfg.output_size)
        self.tp_norm = _LayerNorm(cfg.output_size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x * math.sqrt(self.cfg.output_size)
        x = x + sinusoid(x.shape[1], x.shape[2], x.device).to(x.dtype)
        for layer in [*self.encoders0, *self.encoders]:
            x = layer(x, keep)
        x = self.after_norm(x)
        for layer in self.tp_encoders:
            x = layer(x, keep)
        return cast(torch.Tensor, self.tp_norm(x))


def sinusoid(steps: int, depth: int, device: torch.device) -> torch.Tensor:
    """The release's absolute position code: positions from 1, sines then cosines, timescales
    spread over depth/2 - 1 steps up to 10000."""
    positions = torch.arange(1, steps + 1, device=device, dtype=torch.float32)[:, None]
    increment = math.log(10000.0) / (depth / 2 - 1)
    inv = torch.exp(torch.arange(depth // 2, device=device, dtype=torch.float32) * -increment)[None, :]
    return torch.cat([torch.sin(positions * inv), torch.cos(positions * inv)], dim=1)[None]


class _Ctc(nn.Module):
    def __init__(self, size: int, vocab: int) -> None:
        super().__init__()
        self.ctc_lo = nn.Linear(size, vocab)


class SenseVoiceNet(nn.Module):
    def __init__(self, cfg: SenseVoiceConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(QUERY_ROWS, cfg.input_size)
        self.encoder = Encoder(cfg)
        self.ctc = _Ctc(cfg.output_size, cfg.vocab_size)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, language: list[str],
                textnorm: str = "woitn") -> torch.Tensor:
        """CTC log-probabilities (B, QUERIES + T, vocab) for zero-padded features (B, T, input_size);
        `lengths` (B,) real feature frames; `language` one LANGUAGE_QUERY key per item."""
        b = feats.shape[0]
        rows = [[LANGUAGE_QUERY.get(lang, 0), *EVENT_EMOTION_QUERY, TEXTNORM_QUERY[textnorm]]
                for lang in language]
        queries = self.embed(torch.tensor(rows, device=feats.device))
        x = torch.cat([queries.to(feats.dtype), feats], dim=1)
        keep = torch.arange(x.shape[1], device=x.device)[None] < (lengths[:, None] + QUERIES)
        assert keep.shape[0] == b
        out = self.encoder(x, keep)
        return torch.log_softmax(self.ctc.ctc_lo(out).float(), dim=-1)
