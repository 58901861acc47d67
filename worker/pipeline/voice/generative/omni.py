"""`omni` backend: generative emotion reasoning with the Qwen2.5-Omni thinker (3B/7B and fine-tunes
built on it, such as HumanOmniV2) from a local checkpoint directory.

The prompt follows R1-Omni: reasoning in `<think>`, one label from a fixed list in `<answer>`.
Audio+video segments (video recordings: the infer stage samples frames inside the segment) go in
as the frames, in time order, followed by the audio; audio-only segments as audio alone. Frames go
through the checkpoint's Qwen2-VL image processor (in the [gpu] extra, with Pillow).

Audio longer than Whisper's 30 s window is split into consecutive 30 s chunks, each its own audio
span in the same prompt, so nothing is silently cut. The feature extractor and tokenizer are loaded
on their own rather than through Qwen2_5OmniProcessor: the processor also builds the video
processor, which needs torchvision, and expands placeholders for every modality; for audio the
expansion is one formula (`audio_token_count`), mirroring the thinker's audio encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.pipeline import hf_common
from worker.pipeline.contracts import SegmentInput
from worker.pipeline.voice.generative.common import (
    AUDIO_WINDOW_S,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_NEW_TOKENS,
    Generated,
    GenerativeEmotionModel,
    audio_windows,
)

log = logging.getLogger(__name__)

NAME = "omni"
__all__ = ["AUDIO_WINDOW_S", "OmniEmotionModel", "audio_token_count", "load_model"]

SYSTEM_PROMPT = (
    "You are an expert in recognising human emotion from the voice. You listen carefully to tone, "
    "pitch, loudness, pace and wording before you decide."
)
# Frames are resized (aspect kept) to at most this many pixels: 336² px at 14 px patches merged 2×2
# is 144 tokens a frame, enough for a face, and a few frames stay well under the context.
FRAME_MAX_PIXELS = 336 * 336
FRAME_MIN_PIXELS = 56 * 56
VIDEO_PROMPT = (
    "These are frames from the speaker's video in time order, then their voice. Take the face and "
    "the voice together. "
)
USER_PROMPT = (
    "This is one speaker's turn from a customer-service call. As an emotion recognition expert, which "
    "emotion does the speaker convey most clearly? Choose exactly one of: {labels}. Output your "
    "thinking process in <think> </think> tags and the final emotion, one word from the list, in "
    "<answer> </answer> tags."
)


def audio_token_count(feature_frames: int) -> int:
    """Audio tokens the thinker produces for this many mel frames: a stride-2 conv, then 2× pooling."""
    after_conv = (feature_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


@dataclass(frozen=True)
class _Prompted:
    text: str
    chunks: list[np.ndarray]
    frames: list[np.ndarray]


class OmniEmotionModel(GenerativeEmotionModel[_Prompted]):
    """EmotionModel over a Qwen2.5-Omni thinker; one generation per segment, batched."""

    name = NAME

    def __init__(
        self, model: Any, tokenizer: Any, feature_extractor: Any, version: str,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, max_batch: int = DEFAULT_MAX_BATCH,
        image_processor: Any = None,
    ) -> None:
        self.model = model
        # None: the checkpoint has no image processor config (or Pillow is missing): audio only.
        self.image_processor = image_processor
        self.uses_frames = image_processor is not None
        if self.uses_frames:
            # Answers that saw frames are not the audio-only model's: another version.
            version = f"{version}+av{round(FRAME_MAX_PIXELS ** 0.5)}"
        self.image_token = str(getattr(tokenizer, "image_token", None) or "<|IMAGE|>")
        self.vision_bos = str(getattr(tokenizer, "vision_bos_token", None) or "<|vision_bos|>")
        self.vision_eos = str(getattr(tokenizer, "vision_eos_token", None) or "<|vision_eos|>")
        self.feature_extractor = feature_extractor
        self.sample_rate = int(getattr(feature_extractor, "sampling_rate", 16_000))
        self.audio_token = str(getattr(tokenizer, "audio_token", None) or "<|AUDIO|>")
        self.audio_bos = str(getattr(tokenizer, "audio_bos_token", None) or "<|audio_bos|>")
        self.audio_eos = str(getattr(tokenizer, "audio_eos_token", None) or "<|audio_eos|>")
        audio_id = tokenizer.convert_tokens_to_ids(self.audio_token)
        if audio_id != model.config.audio_token_index:
            raise ValueError(
                f"tokenizer maps {self.audio_token} to {audio_id}, the model expects "
                f"{model.config.audio_token_index}: tokenizer and weights are from different checkpoints"
            )
        super().__init__(tokenizer, version, max_new_tokens, max_batch)

    def _prompt(self, segment: SegmentInput) -> _Prompted:
        wave = hf_common.to_model_rate(segment.audio, segment.sample_rate, self.sample_rate)
        chunks = audio_windows(wave, self.sample_rate)
        frames = [f.image for f in segment.frames] if self.image_processor is not None else []
        # Placeholders are expanded after feature extraction, when the frame counts are known.
        vision = "".join(f"{self.vision_bos}{{IMAGE}}{self.vision_eos}" for _ in frames)
        audio = "".join(f"{self.audio_bos}{{AUDIO}}{self.audio_eos}" for _ in chunks)
        user = (VIDEO_PROMPT if frames else "") + USER_PROMPT.format(labels=", ".join(self.labels))
        text = (
            f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
            f"<|im_start|>user\n{vision}{audio}{user}<|im_end|>\n<|im_start|>assistant\n"
        )
        return _Prompted(text=text, chunks=chunks, frames=frames)

    def _cost(self, prompted: _Prompted) -> int:
        return sum(len(c) for c in prompted.chunks)

    def _generate(self, items: Sequence[_Prompted]) -> list[Generated]:
        import torch

        chunks = [chunk for item in items for chunk in item.chunks]
        features = self.feature_extractor(
            chunks, sampling_rate=self.sample_rate, padding="max_length",
            return_attention_mask=True, return_tensors="pt",
        )
        mel_frames = features["attention_mask"].sum(-1).tolist()
        counts = iter(audio_token_count(int(n)) for n in mel_frames)
        images = [frame for item in items for frame in item.frames]
        vision: dict[str, Any] = {}
        image_counts: Iterator[int] = iter([])
        if images and self.image_processor is not None:
            vision = dict(self.image_processor(
                images=images, return_tensors="pt",
                size={"shortest_edge": FRAME_MIN_PIXELS, "longest_edge": FRAME_MAX_PIXELS}))
            merge = int(getattr(self.image_processor, "merge_size", 2)) ** 2
            image_counts = iter(int(grid.prod()) // merge for grid in vision["image_grid_thw"])
        texts = []
        for item in items:
            text = item.text
            for _ in item.frames:
                text = text.replace("{IMAGE}", self.image_token * next(image_counts), 1)
            for _ in item.chunks:
                text = text.replace("{AUDIO}", self.audio_token * next(counts), 1)
            texts.append(text)
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        device = self.model.device
        if vision:
            vision = {"pixel_values": vision["pixel_values"].to(device=device, dtype=self.model.dtype),
                      "image_grid_thw": vision["image_grid_thw"].to(device)}
        recorder = self._recorder(device)
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=encoded["input_ids"].to(device),
                attention_mask=encoded["attention_mask"].to(device),
                **vision,
                input_features=features["input_features"].to(device=device, dtype=self.model.dtype),
                feature_attention_mask=features["attention_mask"].to(device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                logits_processor=self._logits_processors(recorder),
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return self._decode(output[:, encoded["input_ids"].shape[1]:], recorder)


def load_model(
    model_path: Path | None, device: str = "cpu", dtype: str = "auto",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, max_batch: int = DEFAULT_MAX_BATCH,
) -> OmniEmotionModel:
    """Load the thinker, tokenizer and Whisper feature extractor from a local directory."""
    ckpt = hf_common.open_checkpoint(model_path, NAME, device, dtype)
    transformers = ckpt.transformers
    tokenizer = transformers.AutoTokenizer.from_pretrained(ckpt.path, local_files_only=True)
    feature_extractor = transformers.WhisperFeatureExtractor.from_pretrained(ckpt.path, local_files_only=True)
    model = transformers.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        ckpt.path, local_files_only=True, dtype=ckpt.dtype
    )
    model.to(ckpt.device).eval()
    backend = OmniEmotionModel(model, tokenizer, feature_extractor, ckpt.version, max_new_tokens, max_batch,
                               image_processor=_image_processor(transformers, ckpt.path))
    hf_common.warm_up(backend)
    return backend


def _image_processor(transformers: Any, path: Path) -> Any:
    """The checkpoint's Qwen2-VL image processor, or None (frames are then left out, said once)."""
    try:
        import PIL  # noqa: F401  (the image processor resizes through Pillow)

        return transformers.Qwen2VLImageProcessor.from_pretrained(path, local_files_only=True)
    except (ImportError, OSError, ValueError) as exc:
        log.warning("omni: no image processor (%s); video segments are analysed on their audio", exc)
        return None

