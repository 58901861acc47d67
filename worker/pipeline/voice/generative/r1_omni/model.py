"""`r1-omni` backend: the released R1-Omni / HumanOmni-0.5B checkpoint, loaded by this project's own
implementation of its layout (layout.py beside this module) from local directories, with strict key matching.

A release directory holds `config.json` (Qwen2 fields plus `mm_vision_tower` / `mm_audio_tower`,
which name the SigLIP and Whisper directories), the tokenizer and the weights. The SigLIP, Whisper
and BERT-base directories sit beside it (the release asks users to download them and point
`config.json` at them); we resolve each name as given, then inside and beside the checkpoint
directory, and take the BERT directory from `bert_model` in config.json or a `bert-base-uncased`
folder there. Towers load from their directories, as the release does, over any copies the
checkpoint carries (see weights.load_towers) — strictly in both cases (`match_keys`).

The prompt is the release's: its tokenizer's chat template, the frames as one `<video>` span, the
audio as one `<audio>` span (500 tokens per 30 s window; longer segments are several windows in the
same span, never cut), then the instruction R1-Omni was trained and evaluated with. Frames:
`num_frames` (8) spread over the segment, padded to squares with the processor's mean colour, as
in training (`image_aspect_ratio: pad`). The instruction is fixed, so the BERT gate's mix of the three visual
branches is a constant of the checkpoint: computed once at load.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worker.pipeline import hf_common
from worker.pipeline.contracts import SegmentInput
from worker.pipeline.voice.generative.common import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_NEW_TOKENS,
    Generated,
    GenerativeEmotionModel,
    audio_windows,
)
from worker.pipeline.voice.generative.r1_omni import layout
from worker.pipeline.voice.generative.r1_omni.weights import (
    CheckpointMismatch,
    load_towers,
    match_keys,
    read_state_dict,
)

log = logging.getLogger(__name__)

NAME = "r1-omni"
__all__ = ["NAME", "CheckpointMismatch", "R1OmniEmotionModel", "load_model", "match_keys"]

# Without a chat template in the tokenizer: Qwen2's, whose default system turn is this.
SYSTEM_PROMPT = "You are a helpful assistant."
INSTRUCTION = (
    "As an emotional recognition expert; throughout the video, which emotion conveyed by the "
    "characters is the most obvious to you?  Output the thinking process in <think> </think> and "
    "final emotion in <answer> </answer> tags."
)
VIDEO, AUDIO = "<video>", "<audio>"
DEFAULT_NUM_FRAMES = 8


@dataclass(frozen=True)
class Companions:
    """The directories the release keeps outside the checkpoint."""

    vision: Path
    audio: Path
    bert: Path


@dataclass(frozen=True)
class _Prompted:
    pieces: list[str]  # text around the placeholders, len(slots) + 1 pieces
    slots: list[str]  # VIDEO / AUDIO, in prompt order
    chunks: list[np.ndarray]
    frames: list[np.ndarray]


def _locate(names: Sequence[str], checkpoint: Path, what: str) -> Path:
    """A companion directory named in config.json: as given, or by its last path part inside or
    beside the checkpoint (the config usually still holds the hub id or the trainer's paths)."""
    candidates: list[Path] = []
    for name in names:
        given = Path(name).expanduser()
        if not given.is_absolute():
            given = checkpoint / given
        candidates += [given, checkpoint / Path(name).name, checkpoint.parent / Path(name).name]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"r1-omni: the {what} directory {names[0]!r} was not found (looked at "
        f"{', '.join(str(c) for c in dict.fromkeys(candidates))}); download it and point "
        "config.json at it — no hub access here")


def companions(checkpoint: Path, config: dict[str, Any]) -> Companions:
    for key in ("mm_vision_tower", "mm_audio_tower"):
        if not config.get(key):
            raise ValueError(f"r1-omni: {checkpoint}/config.json has no {key!r}: not a HumanOmni checkpoint")
    return Companions(
        vision=_locate([str(config["mm_vision_tower"])], checkpoint, "SigLIP vision tower"),
        audio=_locate([str(config["mm_audio_tower"])], checkpoint, "Whisper audio tower"),
        # The release's README names the folder with underscores; the hub repo with hyphens.
        bert=_locate([str(config["bert_model"])] if config.get("bert_model") else
                     ["bert-base-uncased", "bert_base_uncased"], checkpoint, "BERT-base"),
    )


def chat_prompt(tokenizer: Any, user: str, wrap_spans: bool = True) -> str:
    """The prompt as the release's inference builds it: the tokenizer's chat template over one user
    turn and no system turn (the template adds its default), then each modal placeholder wrapped
    in its start/end tokens (`mm_use_x_start_end`)."""
    if getattr(tokenizer, "chat_template", None):
        text = str(tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                 add_generation_prompt=True))
    else:
        text = (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n"
                f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
    if wrap_spans:
        text = text.replace(VIDEO, f"<vi_start>{VIDEO}<vi_end>").replace(AUDIO, f"<au_start>{AUDIO}<au_end>")
    return text


def _split(text: str, slots: list[str]) -> list[str]:
    pieces = [text]
    for slot in slots:
        head, tail = pieces[-1].split(slot, 1)
        pieces[-1:] = [head, tail]
    return pieces


def _pick_frames(frames: list[np.ndarray], count: int) -> list[np.ndarray]:
    """Exactly `count` frames in time order (repeating the nearest when the segment gave fewer)."""
    if not frames:
        return []
    picks = np.round(np.linspace(0, len(frames) - 1, count)).astype(int)
    return [frames[i] for i in picks]


def _square(image: np.ndarray, fill: Sequence[float]) -> np.ndarray:
    height, width = image.shape[:2]
    side = max(height, width)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = np.asarray([int(c * 255) for c in fill], dtype=np.uint8)  # the release's expand2square
    top, left = (side - height) // 2, (side - width) // 2
    out[top: top + height, left: left + width] = image
    return out


class R1OmniEmotionModel(GenerativeEmotionModel[_Prompted]):
    """EmotionModel over the HumanOmni layout; one generation per segment, batched."""

    name = NAME
    uses_frames = True  # the face model does not vote on top: this model has seen the frames

    def __init__(
        self, lm: Any, tokenizer: Any, feature_extractor: Any, image_processor: Any, mix: Any,
        version: str, *, num_frames: int = DEFAULT_NUM_FRAMES, eos_token_ids: list[int] | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, max_batch: int = DEFAULT_MAX_BATCH,
        select_layer: int = -2, wrap_spans: bool = True,
    ) -> None:
        self.lm = lm
        self.body = lm.model
        self.feature_extractor = feature_extractor
        self.image_processor = image_processor
        self.mix = mix  # (1, 3): video, body, face branch weights for INSTRUCTION
        self.sample_rate = int(getattr(feature_extractor, "sampling_rate", 16_000))
        self.frames_per_segment = int(num_frames)  # what the infer stage samples for us
        self.eos_token_ids = eos_token_ids or [int(tokenizer.eos_token_id)]
        pad = tokenizer.pad_token_id  # id 0 is a real token: test for None, not falsiness
        self.pad_token_id = int(pad) if pad is not None else self.eos_token_ids[0]
        self.fill = list(getattr(image_processor, "image_mean", None) or [0.5, 0.5, 0.5])
        self.select_layer = int(select_layer)  # SigLIP hidden layer the connector reads
        # Text around the spans, for segments with frames and for audio-only ones.
        self.prompts = {slots: _split(chat_prompt(tokenizer, "\n".join(slots) + "\n" + INSTRUCTION,
                                                  wrap_spans), list(slots))
                        for slots in ((VIDEO, AUDIO), (AUDIO,))}
        # Their token ids, once: the text is the same for every segment.
        self.piece_ids = {piece: tokenizer(piece, add_special_tokens=False)["input_ids"]
                          for pieces in self.prompts.values() for piece in pieces}
        super().__init__(tokenizer, version, max_new_tokens, max_batch)

    def _prompt(self, segment: SegmentInput) -> _Prompted:
        wave = hf_common.to_model_rate(segment.audio, segment.sample_rate, self.sample_rate)
        frames = _pick_frames([f.image for f in segment.frames], self.frames_per_segment)
        slots = (VIDEO, AUDIO) if frames else (AUDIO,)
        return _Prompted(pieces=list(self.prompts[slots]), slots=list(slots),
                         chunks=audio_windows(wave, self.sample_rate), frames=frames)

    def _cost(self, prompted: _Prompted) -> int:
        return sum(len(c) for c in prompted.chunks) + len(prompted.frames)

    @torch.inference_mode()
    def _audio_tokens(self, chunks: list[np.ndarray]) -> Any:
        """(chunks, 500, width): Whisper encoder, 3× average pooling in time, projector."""
        features = self.feature_extractor(chunks, sampling_rate=self.sample_rate, return_tensors="pt")
        mel = features["input_features"].to(device=self.lm.device, dtype=self.lm.dtype)
        encoded = self.body.audio_tower.audio_tower.encoder(mel).last_hidden_state
        pooled = torch.nn.functional.avg_pool1d(encoded.transpose(1, 2), layout.AUDIO_POOL, layout.AUDIO_POOL)
        return self.body.audio_projector(pooled.transpose(1, 2))

    @torch.inference_mode()
    def _video_tokens(self, frame_sets: list[list[np.ndarray]]) -> Any:
        """(segments, frames × tokens per frame, width) through SigLIP and the connector."""
        images = [_square(image, self.fill) for frames in frame_sets for image in frames]
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        tower = self.body.vision_tower.vision_tower
        hidden = tower(pixels.to(device=self.lm.device, dtype=self.lm.dtype),
                       output_hidden_states=True).hidden_states[self.select_layer]
        per_segment = hidden.reshape(len(frame_sets), self.frames_per_segment, *hidden.shape[1:])
        return self.body.mm_projector(per_segment, self.mix.expand(len(frame_sets), -1))

    def _generate(self, items: Sequence[_Prompted]) -> list[Generated]:
        with torch.inference_mode():
            audio = self._audio_tokens([chunk for item in items for chunk in item.chunks])
            with_video = [item.frames for item in items if item.frames]
            video = iter(self._video_tokens(with_video)) if with_video else iter(())
            rows = []
            chunk_at = 0
            embed = self.body.embed_tokens
            for item in items:
                parts = []
                for k, piece in enumerate(item.pieces):
                    ids = torch.tensor(self.piece_ids[piece], dtype=torch.long, device=self.lm.device)
                    parts.append(embed(ids))
                    if k < len(item.slots) and item.slots[k] == VIDEO:
                        parts.append(next(video))
                    elif k < len(item.slots):
                        spans = audio[chunk_at: chunk_at + len(item.chunks)]
                        parts.append(spans.reshape(-1, spans.shape[-1]))
                        chunk_at += len(item.chunks)
                rows.append(torch.cat(parts))
            longest = max(len(row) for row in rows)
            embeds = rows[0].new_zeros((len(rows), longest, rows[0].shape[-1]))
            mask = torch.zeros((len(rows), longest), dtype=torch.long, device=self.lm.device)
            for i, row in enumerate(rows):  # left padding: generation continues at the right edge
                embeds[i, longest - len(row):] = row
                mask[i, longest - len(row):] = 1
            recorder = self._recorder(self.lm.device)
            output = self.lm.generate(
                inputs_embeds=embeds, attention_mask=mask, max_new_tokens=self.max_new_tokens,
                do_sample=False, logits_processor=self._logits_processors(recorder),
                eos_token_id=self.eos_token_ids,
                pad_token_id=self.pad_token_id,
            )
        # With only inputs_embeds, generate returns just the new tokens.
        return self._decode(output, recorder)


def load_model(
    model_path: Path | None, device: str = "cpu", dtype: str = "auto",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, max_batch: int = DEFAULT_MAX_BATCH,
) -> R1OmniEmotionModel:
    """Build the layout, load the release's weights strictly, move to the device, warm up."""
    hf_common.require_transformers()  # before reading configs: a missing install says so first
    path = hf_common.require_checkpoint_dir(model_path, NAME)
    raw = json.loads((path / "config.json").read_text())
    dirs = companions(path, raw)
    towers_with_weights = [d for d in (dirs.vision, dirs.audio) if hf_common.has_weights(d)]
    ckpt = hf_common.open_checkpoint(path, NAME, device, dtype, companions=towers_with_weights)
    transformers = ckpt.transformers
    lm_config = transformers.Qwen2Config(**{
        k: v for k, v in raw.items()
        if k not in {"model_type", "architectures", "auto_map", "_name_or_path", "transformers_version"}})
    vision_config = transformers.SiglipVisionConfig.from_pretrained(dirs.vision, local_files_only=True)
    audio_config = transformers.WhisperConfig.from_pretrained(dirs.audio, local_files_only=True)
    bert_config = transformers.BertConfig.from_pretrained(dirs.bert, local_files_only=True)
    vision_width = int(raw.get("mm_hidden_size") or vision_config.hidden_size)
    audio_width = int(raw.get("audio_hidden_size") or audio_config.d_model)
    if raw.get("mm_projector_type", "all_in_one_small") != "all_in_one_small":
        raise CheckpointMismatch(f"r1-omni implements the 'all_in_one_small' connector of the released "
                                 f"0.5B model, not {raw.get('mm_projector_type')!r}")
    layout.AllInOneSmall.tokens_per_frame((vision_config.image_size // vision_config.patch_size) ** 2)
    lm = layout.build(lm_config, vision_config, audio_config, bert_config, vision_width, audio_width)
    state = read_state_dict(path)
    in_checkpoint = match_keys(lm.state_dict(), state, tied=bool(lm_config.tie_word_embeddings))
    lm.load_state_dict({k: v for k, v in state.items() if not k.startswith(layout.UNUSED_KEY_PREFIXES)},
                       strict=False)  # completeness was checked by match_keys
    del state
    load_towers(lm, dirs.vision, dirs.audio, in_checkpoint,
                audio_from_checkpoint=bool(raw.get("unfreeze_mm_audio_tower")))
    if lm_config.tie_word_embeddings:
        lm.tie_weights()
    lm.to(device=ckpt.device, dtype=ckpt.dtype).eval()

    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    bert_tokenizer = transformers.AutoTokenizer.from_pretrained(dirs.bert, local_files_only=True)
    with torch.inference_mode():
        question = bert_tokenizer([INSTRUCTION], return_tensors="pt", truncation=True).to(ckpt.device)
        cls = lm.model.bert_model(**question).last_hidden_state[:, 0]
        mix = torch.softmax(lm.model.bert_gate(cls).float(), dim=-1).to(ckpt.dtype)
    eos = _generation_settings(transformers, lm, path, tokenizer)
    backend = R1OmniEmotionModel(
        lm, tokenizer,
        transformers.WhisperFeatureExtractor.from_pretrained(dirs.audio, local_files_only=True),
        transformers.SiglipImageProcessor.from_pretrained(dirs.vision, local_files_only=True),
        mix, ckpt.version, num_frames=int(raw.get("num_frames") or DEFAULT_NUM_FRAMES),
        eos_token_ids=eos, max_new_tokens=max_new_tokens, max_batch=max_batch,
        select_layer=int(raw.get("mm_vision_select_layer", -2)),
        wrap_spans=bool(raw.get("mm_use_x_start_end", True)))
    log.info("r1-omni %s loaded on %s (%s); branch mix video/body/face = %s", backend.version,
             ckpt.device, ckpt.dtype, [round(float(x), 3) for x in mix[0]])
    hf_common.warm_up(backend)
    return backend


def _generation_settings(transformers: Any, lm: Any, path: Path, tokenizer: Any) -> list[int]:
    """The checkpoint's generation_config.json as from_pretrained would apply it (a repetition
    penalty there changes greedy answers too), greedy; returns the end tokens: the file's, the
    tokenizer's and <|im_end|> (the release stops on the tokenizer's end token as well)."""
    ids: set[int] = set()
    if (path / "generation_config.json").is_file():
        config = transformers.GenerationConfig.from_pretrained(path, local_files_only=True)
        config.do_sample, config.temperature, config.top_p, config.top_k = False, None, None, None
        lm.generation_config = config
        eos = config.eos_token_id
        ids |= {int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None}
    unk = tokenizer.unk_token_id
    for candidate in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")):
        if isinstance(candidate, int) and candidate >= 0 and candidate != unk:
            ids.add(candidate)
    return sorted(ids)
