"""The module tree of the released R1-Omni / HumanOmni-0.5B checkpoint, written for this project so
that the published weights load by name (see r1_omni.py for loading, prompting and generation).

What the public HumanMLLM/R1-Omni code shows the layout to be (read, not copied):

* a Qwen2 causal LM (`model.embed_tokens`, `model.layers.*`, `model.norm`, `lm_head`, tied to the
  embeddings in the 0.5B model);
* `model.vision_tower.vision_tower`: a SigLIP vision model; features are the second-to-last hidden
  layer, every patch token (SigLIP has no CLS token);
* `model.mm_projector`: the "all_in_one_small" connector, three branches over the frames: "video"
  and "body" (each a RegNet stage, a strided 3-D convolution over time and space, another RegNet
  stage, a two-layer GELU MLP) and "face" (a two-layer GELU MLP per patch, then 2× bilinear pooling);
* `model.bert_model` + `model.bert_gate`: a BERT-base encoder reads the instruction and a
  768→3584→3 MLP turns its [CLS] vector into the three branches' mixing weights;
* `model.audio_tower.audio_tower.encoder`: a Whisper encoder (large-v3 in the release), then 3×
  average pooling over time and `model.audio_projector` (two-layer GELU MLP).

The RegNet stage is timm's `RegStage` with the arguments the connector passes (SiLU, a channel
LayerNorm with eps 1e-5, bottleneck ratio 1, depthwise 3×3, squeeze-excite at ¼ of the input
width, 1×1 projection shortcut when the width changes); the parameter names (`b1.conv1.conv`,
`.bn`, `se.fc1`, `downsample`, …) are timm's, because the checkpoint's keys are.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

BRANCHES = ("video", "body", "face")
GATE_HIDDEN = 3584  # fixed in the released code, whatever the LM's width
AUDIO_POOL = 3  # Whisper's 1500 frames per 30 s → 500 audio tokens
REGSTAGE_DEPTH = 2
SE_RATIO = 0.25


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map, optionally followed by SiLU (timm's LayerNormAct2d)."""

    def __init__(self, channels: int, act: bool) -> None:
        super().__init__(channels, eps=1e-5)
        self.act: nn.Module = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return cast(torch.Tensor, self.act(x.permute(0, 3, 1, 2)))


class ConvNorm(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, *, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False)
        self.bn = ChannelNorm(c_out, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class RegBottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(c_in, c_out, 1)
        self.conv2 = ConvNorm(c_out, c_out, 3, groups=c_out)  # group width 1: depthwise
        self.se = SqueezeExcite(c_out, round(c_in * SE_RATIO))
        self.conv3 = ConvNorm(c_out, c_out, 1, act=False)
        self.downsample: nn.Module = ConvNorm(c_in, c_out, 1, act=False) if c_in != c_out else nn.Identity()
        self.act3 = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.se(self.conv2(self.conv1(x))))
        return cast(torch.Tensor, self.act3(out + self.downsample(x)))


class RegStage(nn.Module):
    """`depth` bottlenecks named b1, b2, …; the first changes the width."""

    def __init__(self, c_in: int, c_out: int, depth: int = REGSTAGE_DEPTH) -> None:
        super().__init__()
        for i in range(depth):
            self.add_module(f"b{i + 1}", RegBottleneck(c_in if i == 0 else c_out, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return x


def gelu_mlp(c_in: int, c_out: int) -> nn.Sequential:
    """Linear, GELU, Linear (keys .0 and .2): the release's "mlp2x_gelu"."""
    return nn.Sequential(nn.Linear(c_in, c_out), nn.GELU(), nn.Linear(c_out, c_out))


def _sampler(width: int) -> nn.Sequential:
    # Kernel 2 in time padded by one on both sides, stride 2 in space: t frames → t + 1 steps, the
    # last dropped in forward, so the frame count is kept and each side is halved.
    return nn.Sequential(
        nn.Conv3d(width, width, kernel_size=(2, 2, 2), stride=(1, 2, 2), padding=(1, 0, 0)), nn.SiLU()
    )


class AllInOneSmall(nn.Module):
    """The "all_in_one_small" connector: frames' patch features → video, body and face tokens."""

    def __init__(self, vision_width: int, width: int) -> None:
        super().__init__()
        for branch in ("video", "body"):
            self.add_module(f"s1_{branch}", RegStage(vision_width, width))
            self.add_module(f"sampler_{branch}", _sampler(width))
            self.add_module(f"s2_{branch}", RegStage(width, width))
            self.add_module(f"readout_{branch}", gelu_mlp(width, width))
        self.mlp_2xgelu_face = gelu_mlp(vision_width, width)

    def _spatio_temporal(self, branch: str, frames: torch.Tensor) -> torch.Tensor:
        """(b, t, h·w, d) → (b, t·(h/2)·(w/2), width)."""
        b, t, n, d = frames.shape
        side = math.isqrt(n)
        x = frames.reshape(b * t, side, side, d).permute(0, 3, 1, 2)
        x = getattr(self, f"s1_{branch}")(x)
        x = x.reshape(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)  # b, c, t, h, w
        x = getattr(self, f"sampler_{branch}")(x)[:, :, :-1]
        c, t2, h2, w2 = x.shape[1:]
        x = x.permute(0, 2, 1, 3, 4).reshape(b * t2, c, h2, w2)
        x = getattr(self, f"s2_{branch}")(x)
        x = x.reshape(b, t2, c, h2 * w2).permute(0, 1, 3, 2).reshape(b, t2 * h2 * w2, c)
        return cast(torch.Tensor, getattr(self, f"readout_{branch}")(x))

    def _face(self, frames: torch.Tensor) -> torch.Tensor:
        b, t, n, _ = frames.shape
        side = math.isqrt(n)
        x = self.mlp_2xgelu_face(frames)  # b, t, n, width
        x = x.reshape(b * t, side, side, -1).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(math.ceil(side / 2), math.ceil(side / 2)), mode="bilinear")
        return x.permute(0, 2, 3, 1).reshape(b, -1, x.shape[1])

    def forward(self, frames: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """frames (b, t, patches, d) and mix (b, 3): one (b, tokens, width) sequence per sample."""
        branches = (self._spatio_temporal("video", frames), self._spatio_temporal("body", frames),
                    self._face(frames))
        out: torch.Tensor = sum(  # type: ignore[assignment]
            feature * mix[:, i, None, None].to(feature.dtype) for i, feature in enumerate(branches))
        return out

    @staticmethod
    def tokens_per_frame(patches: int) -> int:
        """Tokens each frame becomes; the two spatial paths must agree (even patch grids only)."""
        side = math.isqrt(patches)
        if side * side != patches or side % 2:
            raise ValueError(f"the connector needs an even square patch grid, got {patches} patches")
        return (side // 2) ** 2


class TowerSlot(nn.Module):
    """Holds a tower under the attribute name the checkpoint uses twice (`vision_tower.vision_tower`)."""

    def __init__(self, name: str, tower: nn.Module) -> None:
        super().__init__()
        self.add_module(name, tower)


class WhisperEncoderHolder(nn.Module):
    """The release loads `WhisperForAudioClassification` and calls only its `.encoder`."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder


# Keys a checkpoint may carry that the model never uses: the audio-classification head around the
# Whisper encoder (only the encoder runs).
UNUSED_KEY_PREFIXES = (
    "model.audio_tower.audio_tower.projector.",
    "model.audio_tower.audio_tower.classifier.",
    "model.audio_tower.audio_tower.layer_weights",
)
VISION_PREFIX = "model.vision_tower.vision_tower."
AUDIO_PREFIX = "model.audio_tower.audio_tower.encoder."


def build(lm_config: Any, vision_config: Any, audio_config: Any, bert_config: Any,
          vision_width: int, audio_width: int) -> Any:
    """A Qwen2ForCausalLM whose `model` also carries the multimodal parts, so the whole module's
    state_dict keys are the release's."""
    from transformers import BertModel, Qwen2ForCausalLM, SiglipVisionModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    lm = Qwen2ForCausalLM(lm_config)
    body = lm.model
    width = lm_config.hidden_size
    body.vision_tower = TowerSlot("vision_tower", SiglipVisionModel(vision_config))
    body.mm_projector = AllInOneSmall(vision_width, width)
    body.bert_model = BertModel(bert_config)
    body.bert_gate = nn.Sequential(nn.Linear(bert_config.hidden_size, GATE_HIDDEN), nn.GELU(),
                                   nn.Linear(GATE_HIDDEN, len(BRANCHES)))
    body.audio_tower = TowerSlot("audio_tower", WhisperEncoderHolder(WhisperEncoder(audio_config)))
    body.audio_projector = gelu_mlp(audio_width, width)
    return lm
