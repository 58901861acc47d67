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

from worker.pipeline import prosody, reasoning
from worker.pipeline.contracts import EmotionResult, Evidence, SegmentInput
from worker.pipeline.emotion import hf_common, labels
from worker.pipeline.emotion.answer_parsing import ParsedAnswer, parse_generation
from worker.pipeline.emotion.batching import OomGuard

log = logging.getLogger(__name__)

NAME = "omni"
DEFAULT_MAX_NEW_TOKENS = 128
DEFAULT_MAX_BATCH = 8
AUDIO_WINDOW_S = 30.0  # Whisper-style encoders see at most 30 s per input
MIN_SAMPLES = 400
THINK_EVIDENCE_CHARS = 600
# Without label-token probabilities (see _label_scores) the answer's structure is all we know.
CONFIDENCE_WELL_FORMED = 0.6
CONFIDENCE_MALFORMED = 0.4
# Label tokens must carry at least this share of the next-token mass for their probabilities to
# stand in for the answer's scores; below it the model was about to write something else.
MIN_LABEL_MASS = 0.5

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


class _LabelProbabilityRecorder:
    """A logits processor that only watches: per generation step, the probability of each label's
    first tokens. A few numbers per step, where `output_logits` would keep steps × batch × vocabulary
    (128 × 8 × 152k floats) on the GPU and copy them back."""

    def __init__(self, token_ids: Any) -> None:
        self.token_ids = token_ids
        self.steps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        self.steps.append(torch.softmax(scores.float(), dim=-1)[:, self.token_ids])
        return scores

    def per_row(self) -> np.ndarray:
        """(batch, steps, label tokens) on the CPU; steps == 0 when nothing was generated."""
        import torch

        if not self.steps:
            return np.zeros((0, 0, int(self.token_ids.numel())), dtype=np.float32)
        return torch.stack(self.steps, dim=1).cpu().numpy()


class OmniEmotionModel:
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
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"  # generation continues from the right edge
        self.feature_extractor = feature_extractor
        self.version = version
        self.max_new_tokens = int(max_new_tokens)
        self.sample_rate = int(getattr(feature_extractor, "sampling_rate", 16_000))
        self.labels = labels.CANONICAL_LABELS
        self.audio_token = str(getattr(tokenizer, "audio_token", None) or "<|AUDIO|>")
        self.audio_bos = str(getattr(tokenizer, "audio_bos_token", None) or "<|audio_bos|>")
        self.audio_eos = str(getattr(tokenizer, "audio_eos_token", None) or "<|audio_eos|>")
        audio_id = tokenizer.convert_tokens_to_ids(self.audio_token)
        if audio_id != model.config.audio_token_index:
            raise ValueError(
                f"tokenizer maps {self.audio_token} to {audio_id}, the model expects "
                f"{model.config.audio_token_index}: tokenizer and weights are from different checkpoints"
            )
        self.label_token_ids = self._label_first_tokens()
        # Column of each label's tokens in what _LabelProbabilityRecorder records.
        self.label_columns: dict[str, list[int]] = {}
        self.recorded_token_ids: list[int] = []
        for label, token_ids in (self.label_token_ids or {}).items():
            start = len(self.recorded_token_ids)
            self.recorded_token_ids.extend(token_ids)
            self.label_columns[label] = list(range(start, len(self.recorded_token_ids)))
        self.guard = OomGuard(max_batch)

    def _label_first_tokens(self) -> dict[str, list[int]] | None:
        """First tokens each label may start with after `<answer>`. A token shared by two labels
        ("s" for sad/surprise in a small vocabulary) cannot tell them apart and is dropped; if a
        label is left with none, None: the heuristic confidence is used instead."""
        candidates: dict[str, set[int]] = {}
        for label in self.labels:
            ids: set[int] = set()
            for spelling in (label, f" {label}", label.capitalize(), f" {label.capitalize()}"):
                encoded = self.tokenizer.encode(spelling, add_special_tokens=False)
                if encoded:
                    ids.add(int(encoded[0]))
            candidates[label] = ids
        owners: dict[int, int] = {}
        for ids in candidates.values():
            for token_id in ids:
                owners[token_id] = owners.get(token_id, 0) + 1
        out = {label: sorted(i for i in ids if owners[i] == 1) for label, ids in candidates.items()}
        return out if all(out.values()) else None

    def predict(self, batch: list[SegmentInput]) -> list[EmotionResult]:
        if not batch:
            return []
        prompted = [self._prompt(segment) for segment in batch]
        order = sorted(range(len(batch)), key=lambda i: sum(len(c) for c in prompted[i].chunks))
        generated = self.guard.run(self._generate, [prompted[i] for i in order])
        by_input: list[tuple[str, dict[str, float] | None]] = [("", None)] * len(batch)
        for position, index in enumerate(order):
            by_input[index] = generated[position]
        return [self._result(segment, text, token_scores)
                for segment, (text, token_scores) in zip(batch, by_input, strict=True)]

    def _prompt(self, segment: SegmentInput) -> _Prompted:
        wave = hf_common.to_model_rate(segment.audio, segment.sample_rate, self.sample_rate)
        window = int(AUDIO_WINDOW_S * self.sample_rate)
        chunks = [wave[i: i + window] for i in range(0, max(len(wave), 1), window)]
        chunks = [c if len(c) >= MIN_SAMPLES else np.pad(c, (0, MIN_SAMPLES - len(c))) for c in chunks]
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

    def _generate(self, items: Sequence[_Prompted]) -> list[tuple[str, dict[str, float] | None]]:
        import torch
        from transformers import LogitsProcessorList

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
        recorder = _LabelProbabilityRecorder(torch.tensor(self.recorded_token_ids, device=device))
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=encoded["input_ids"].to(device),
                attention_mask=encoded["attention_mask"].to(device),
                **vision,
                input_features=features["input_features"].to(device=device, dtype=self.model.dtype),
                feature_attention_mask=features["attention_mask"].to(device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([recorder] if self.recorded_token_ids else []),
                pad_token_id=self.tokenizer.pad_token_id,
            )
        prompt_length = encoded["input_ids"].shape[1]
        new_tokens = output[:, prompt_length:].cpu()
        label_probabilities = recorder.per_row()
        out = []
        for row in range(new_tokens.shape[0]):
            ids = new_tokens[row].tolist()
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            steps = label_probabilities[row] if len(label_probabilities) else label_probabilities
            out.append((text, self._label_scores(ids, steps)))
        return out

    def _label_scores(self, ids: list[int], step_probabilities: np.ndarray) -> dict[str, float] | None:
        """Label probabilities at the first answer token, as the decoder saw them while generating
        (recorded by _LabelProbabilityRecorder, shape steps × label tokens). None when they cannot
        stand for the answer."""
        if not self.label_columns or len(step_probabilities) == 0:
            return None
        position = None
        for k in range(1, len(ids) + 1):
            if "<answer>" in self.tokenizer.decode(ids[:k], skip_special_tokens=True).lower():
                position = k
                break
        # Skip whitespace tokens between "<answer>" and the label.
        while position is not None and position < len(ids) and not self.tokenizer.decode(
            [ids[position]], skip_special_tokens=True
        ).strip():
            position += 1
        if position is None or position >= len(step_probabilities):
            return None
        at_answer = step_probabilities[position]
        mass = {label: float(at_answer[columns].sum()) for label, columns in self.label_columns.items()}
        total = sum(mass.values())
        if total < MIN_LABEL_MASS:
            return None
        return {label: p / total for label, p in mass.items()}

    def _result(
        self, segment: SegmentInput, text: str, token_scores: dict[str, float] | None
    ) -> EmotionResult:
        parsed = parse_generation(text)
        end_s = max(segment.end_s, segment.start_s)
        span = reasoning.Span(segment.start_s, end_s)
        scores, confidence = self._scores(parsed, token_scores)
        label = parsed.label or "neutral"
        evidence: list[Evidence] = [
            reasoning.classifier_evidence(scores, parsed.raw_label, span, "Omni model")
        ]
        if parsed.think:
            think = parsed.think if len(parsed.think) <= THINK_EVIDENCE_CHARS else (
                parsed.think[:THINK_EVIDENCE_CHARS].rsplit(" ", 1)[0] + "…")
            evidence.append(Evidence(
                start_s=span.start_s, end_s=span.end_s, modality="audio", cue="think",
                value=parsed.answer[:64] or None, text=f"Model reasoning over {span.label()}: {think}",
            ))
        acoustics = segment.acoustics or prosody.measure(segment.audio, segment.sample_rate)
        evidence.extend(reasoning.prosody_evidence(acoustics, segment.baseline or None, span))
        summary = reasoning.reasoning_text(label, confidence, evidence, segment.start_s, end_s)
        if parsed.label is None:
            summary = (f"Model answer not understood (label unknown) for {span.label()}; "
                       f"raw output: {text.strip()[:2000]}")
        elif parsed.think:
            summary = f"{summary}\n\nModel reasoning: {parsed.think}"
        valence, arousal = labels.valence_arousal(scores) if parsed.label else (None, None)
        return EmotionResult(
            label=label, raw_label=parsed.raw_label, scores=scores, confidence=float(confidence),
            valence=valence, arousal=arousal, evidence=evidence, reasoning_text=summary,
        )

    def _scores(
        self, parsed: ParsedAnswer, token_scores: dict[str, float] | None
    ) -> tuple[dict[str, float], float]:
        if parsed.label is None:
            # No opinion: uniform scores, confidence 0 (see answer_parsing's module docstring).
            return {label: 1.0 / len(self.labels) for label in self.labels}, 0.0
        if token_scores is not None and parsed.label in token_scores:
            return token_scores, token_scores[parsed.label]
        confidence = CONFIDENCE_WELL_FORMED if parsed.well_formed else CONFIDENCE_MALFORMED
        others = [label for label in self.labels if label != parsed.label]
        scores = dict.fromkeys(others, (1.0 - confidence) / len(others))
        scores[parsed.label] = confidence
        return scores, confidence


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

