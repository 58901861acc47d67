"""`emotion2vec` backend: emotion2vec / emotion2vec+ (seed, base, large) as released for FunASR,
run by this project's own implementation (emotion2vec_net.py) with strict key matching.

A release directory holds `config.yaml` (`model_conf`: encoder sizes), `model.pt` (the state dict)
and, for the classifiers, `tokens.txt` (one class per line, "生气/angry" style; lines starting
with "unuse" are unused outputs, masked as the release masks them). Without tokens.txt the
directory is the self-supervised encoder alone: it cannot label segments, but `callpulse adapt
--base` can train a head on its utterance embedding (`Emotion2vecModel.embed`).

The release's nine classes fold onto the canonical labels (angry, disgusted, fearful, happy,
neutral, sad, surprised); `other` and `unknown` keep their raw names: their probability stays out
of the canonical scores and lowers the confidence (raw mass behind the chosen label).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from worker.pipeline import hf_common
from worker.pipeline.batching import OomGuard
from worker.pipeline.contracts import EmotionResult, SegmentInput
from worker.pipeline.voice.funasr import release
from worker.pipeline.voice.funasr.emotion2vec_net import Emotion2vecConfig, Emotion2vecNet
from worker.pipeline.voice.result import result_from_raw

NAME = "emotion2vec"
TOKENS = "tokens.txt"
SAMPLE_RATE = 16_000
# The conv front end needs one full receptive field (400 samples at 16 kHz) to give a frame.
MIN_SAMPLES = 400
DEFAULT_MAX_BATCH = 16
# Decoder of the self-supervised pre-training (reconstructs masked frames): released in some
# model.pt files, never run for inference, so never a reason to refuse a checkpoint.
PRETRAINING_ONLY = ("modality_encoders.AUDIO.decoder.",)


# The release's Chinese class names, for a tokens.txt that carries only those.
CHINESE = {"生气": "angry", "厌恶": "disgusted", "恐惧": "fearful", "开心": "happy", "中立": "neutral",
           "其他": "other", "难过": "sad", "吃惊": "surprised"}


def read_classes(path: Path) -> list[str] | None:
    """The head's classes from tokens.txt, in output order ("生气/angry" → "angry", "生气" →
    "angry", "<unk>" → "unknown"); None when the release has no head."""
    file = path / TOKENS
    if not file.is_file():
        return None
    classes = []
    for line in file.read_text(encoding="utf-8").splitlines():
        token = line.strip()
        if not token:
            continue
        token = token.split("/")[-1].strip()
        token = CHINESE.get(token, token)
        classes.append("unknown" if token in ("<unk>", "unk") else token.lower())
    return classes


class Emotion2vecModel:
    """EmotionModel over an emotion2vec release; `embed` gives the utterance embedding."""

    name = NAME

    def __init__(self, net: Emotion2vecNet, classes: list[str] | None, version: str, device: torch.device,
                 dtype: torch.dtype, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.net = net
        self.classes = classes
        self.version = version
        self.device = device
        self.dtype = dtype
        self.embedding_dim = net.cfg.embed_dim
        self.guard = OomGuard(max_batch)
        self.used = [i for i, c in enumerate(classes or []) if not c.startswith("unuse")]

    def predict(self, batch: list[SegmentInput]) -> list[EmotionResult]:
        if self.classes is None or self.net.proj is None:
            raise RuntimeError("this emotion2vec release has no classification head (no tokens.txt): "
                               "adapt one with `callpulse adapt --base`")
        embeddings = self.embed(batch)
        with torch.inference_mode():
            logits = self.net.proj(torch.from_numpy(embeddings).to(self.device, self.dtype)).float()
        probs = torch.softmax(logits[:, self.used], dim=-1).cpu().numpy()
        names = [self.classes[i] for i in self.used]
        return [result_from_raw(segment, dict(zip(names, map(float, row), strict=True)),
                                raw_mass_confidence=True) for segment, row in zip(batch, probs, strict=True)]

    def embed(self, batch: Sequence[SegmentInput]) -> np.ndarray:
        """(N, D) float32 utterance embeddings, in input order (batched by similar length)."""
        if not batch:
            return np.zeros((0, self.embedding_dim), np.float32)
        waves = [self._wave(segment) for segment in batch]
        order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
        rows = self.guard.run(self._forward, [waves[i] for i in order])
        out = np.zeros((len(waves), self.embedding_dim), np.float32)
        for position, index in enumerate(order):
            out[index] = rows[position]
        return out

    def _wave(self, segment: SegmentInput) -> np.ndarray:
        wave = hf_common.to_model_rate(segment.audio, segment.sample_rate, SAMPLE_RATE)
        return np.pad(wave, (0, MIN_SAMPLES - wave.size)) if wave.size < MIN_SAMPLES else wave

    def _forward(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        longest = max(len(w) for w in waves)
        padded = np.zeros((len(waves), longest), np.float32)
        for i, wave in enumerate(waves):
            padded[i, : len(wave)] = wave
        lengths = torch.tensor([len(w) for w in waves], device=self.device)
        with torch.inference_mode():
            emb = self.net.embed(torch.from_numpy(padded).to(self.device, self.dtype), lengths)
        return list(emb.float().cpu().numpy())


def build(path: Path) -> tuple[Emotion2vecNet, list[str] | None]:
    """The network a release's config.yaml describes (random weights), and its classes."""
    config = release.read_config(path)
    try:
        cfg = Emotion2vecConfig.from_release(dict(config.get("model_conf") or {}))
    except ValueError as exc:
        raise release.CheckpointMismatch(str(exc)) from exc
    classes = read_classes(path)
    return Emotion2vecNet(cfg, len(classes) if classes else 0), classes


def load_model(model_path: Path | None, device: str = "cpu", dtype: str = "auto",
               max_batch: int = DEFAULT_MAX_BATCH, *, require_head: bool = True) -> Emotion2vecModel:
    """Load a release directory strictly (every parameter from model.pt, nothing left over).
    `require_head=False`: the encoder alone is enough (adaptation trains its own head)."""
    path = release.release_dir(model_path, NAME)
    version = release.version(path, [TOKENS, release.CONFIG])
    net, classes = build(path)
    if require_head and not classes:
        raise release.CheckpointMismatch(
            f"{path} has no {TOKENS}: it is the self-supervised emotion2vec encoder without an emotion "
            "head; use an emotion2vec+ release (seed, base or large), or train a head on it with "
            "`callpulse adapt --base`")
    state = release.read_weights(path)
    scale = state.get("modality_encoders.AUDIO.alibi_scale")
    if scale is not None and scale.dim() == 4:  # older saves kept it without the layer axis
        state["modality_encoders.AUDIO.alibi_scale"] = scale.unsqueeze(0)
    what = f"emotion2vec ({'with' if classes else 'without'} a {len(classes or [])}-class head per {TOKENS})"
    net.load_state_dict(release.match(net.state_dict(), state, what, PRETRAINING_ONLY), strict=True)
    del state
    torch_device = hf_common.resolve_device(device)
    torch_dtype = hf_common.resolve_dtype(torch_device, dtype)
    net.to(device=torch_device, dtype=torch_dtype).eval()
    model = Emotion2vecModel(net, classes, version, torch_device, torch_dtype, max_batch)
    if classes:
        hf_common.warm_up(model)
    return model
