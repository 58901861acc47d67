"""Optional stage: our own speech recognition (Whisper through transformers) for calls whose client
sent no transcript. whisperX-style: speech spans (the VAD segments ingest already stored) are packed
per channel into windows of at most 30 s, the windows are decoded in batches, and word times come
from the decoder's cross-attention (the checkpoint's alignment heads) by dynamic time warping, in
absolute call time. Output rows have the shape of the `transcript` table, so the infer stage reads
them exactly like an uploaded transcript.

Decoding runs the generic transformers generation loop with an explicit Whisper prompt
(<|startoftranscript|><|lang|><|transcribe|><|notimestamps|>) rather than Whisper's own long-form
`generate`: our windows are already ≤ 30 s, and the alignment pass below is one teacher-forced
forward whose output is the same on every transformers version. Imports of torch/transformers are
lazy: this module imports on a machine without the [gpu] extra."""

from __future__ import annotations

import logging
import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from worker.pipeline.batching import OomGuard
from worker.pipeline.contracts import DecodedAudio, Word
from worker.pipeline.hf_common import MissingDependency, open_checkpoint, to_model_rate
from worker.pipeline.media import audio_store
from worker.pipeline.speech.vad import speaker_name
from worker.pipeline.text.transcript import WORD_GAP_S, Utterance, to_rows

log = logging.getLogger(__name__)

WINDOW_S = 30.0  # what Whisper's encoder sees at once (3000 mel frames)
EDGE_PAD_S = 0.2  # context around the VAD spans, so a word at a span's edge is not clipped
FRAMES_PER_S = 50  # encoder positions per second (1500 per window)
MEDIAN_WIDTH = 7  # smoothing of the alignment heads along time before DTW (openai's choice)
SENTENCE_END = (".", "?", "!", "。", "？", "！")
# Scripts written without spaces between words: every token that completes a character is a word.
SPACELESS = frozenset({"zh", "ja", "th", "lo", "km", "my", "yue", "bo"})


class AsrUnavailable(RuntimeError):
    """The ASR model cannot be used (no checkpoint, not Whisper, no transformers, no CUDA): a
    configuration problem, not this recording's; the call is analyzed without words."""


@dataclass(frozen=True)
class Span:
    """Speech on one channel, in absolute seconds."""

    channel: int
    start_s: float
    end_s: float


@dataclass
class AsrModel:
    """A loaded Whisper checkpoint plus the token ids its prompt and alignment need."""

    model: Any
    processor: Any
    device: Any
    dtype: Any
    version: str
    sample_rate: int
    sot: int
    eos: int
    no_timestamps: int
    transcribe: int | None  # None on English-only checkpoints (no language/task tokens)
    languages: dict[str, int]  # "en" → <|en|>
    alignment_heads: list[tuple[int, int]]
    max_new_tokens: int
    suppress: list[int]
    begin_suppress: list[int]  # never start with a space or end-of-text (Whisper's own rule)
    guard: OomGuard = field(default_factory=lambda: OomGuard(8))  # halves batches on CUDA OOM


def load_model(model_path: Path | None, device: str = "cpu", dtype: str = "auto") -> AsrModel:
    """Load a local Whisper checkpoint directory (config, weights, processor files); never the hub."""
    if model_path is None:
        raise AsrUnavailable("CALLPULSE_ASR_MODEL_PATH is not set: point it at a local Whisper checkpoint")
    try:
        ckpt = open_checkpoint(model_path, "asr", device, dtype)
    except (FileNotFoundError, MissingDependency, RuntimeError) as exc:
        raise AsrUnavailable(f"ASR model at {model_path} cannot be used: {exc}") from exc
    tf = ckpt.transformers
    try:
        processor = tf.WhisperProcessor.from_pretrained(ckpt.path, local_files_only=True)
        # Eager attention: the alignment pass reads cross-attention weights, which SDPA does not return.
        model = tf.WhisperForConditionalGeneration.from_pretrained(
            ckpt.path, local_files_only=True, dtype=ckpt.dtype, attn_implementation="eager",
        ).to(ckpt.device).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise AsrUnavailable(f"{ckpt.path} is not a usable Whisper checkpoint: {exc}") from exc
    gen = model.generation_config
    heads = getattr(gen, "alignment_heads", None)
    if not heads:
        raise AsrUnavailable(f"{ckpt.path}: generation_config.json has no alignment_heads (needed for "
                             "word times)")
    try:
        eos = int(gen.eos_token_id if isinstance(gen.eos_token_id, int) else gen.eos_token_id[0])
        no_ts = int(gen.no_timestamps_token_id)
        sot = int(gen.decoder_start_token_id)
    except (AttributeError, TypeError, IndexError) as exc:
        raise AsrUnavailable(f"{ckpt.path}: generation_config.json lacks Whisper's special token ids "
                             f"({exc})") from exc
    languages = {token.strip("<|>"): int(i) for token, i in (getattr(gen, "lang_to_id", None) or {}).items()}
    task_ids = getattr(gen, "task_to_id", None) or {}
    transcribe = int(task_ids["transcribe"]) if languages and "transcribe" in task_ids else None
    # Text only: every special and timestamp token is suppressed except end-of-text.
    vocab = int(model.config.vocab_size)
    suppress = sorted({*(int(t) for t in (gen.suppress_tokens or [])), *range(eos + 1, vocab)})
    prompt_len = 4 if transcribe is not None else 2
    # Room for the prompt and the end-of-text appended for the alignment pass, within the
    # checkpoint's own decoding limit.
    max_new = int(model.config.max_target_positions) - prompt_len - 1
    if gen.max_length:
        max_new = min(max_new, int(gen.max_length) - prompt_len)
    log.info("ASR model %s on %s (%s)", ckpt.version, ckpt.device, ckpt.dtype)
    return AsrModel(
        model=model, processor=processor, device=ckpt.device, dtype=ckpt.dtype, version=ckpt.version,
        sample_rate=int(processor.feature_extractor.sampling_rate), sot=sot,
        eos=eos, no_timestamps=no_ts, transcribe=transcribe, languages=languages,
        alignment_heads=[(int(layer), int(head)) for layer, head in heads],
        max_new_tokens=max(1, max_new), suppress=suppress,
        begin_suppress=[int(t) for t in (gen.begin_suppress_tokens or [])],
    )


def plan_windows(spans: Sequence[Span], duration_s: float) -> list[Span]:
    """Pack each channel's speech spans, in order, into windows of at most 30 s; silence between
    windows is never decoded. A span longer than a window is cut into windows (nothing is dropped).
    Windows get EDGE_PAD_S of context where there is room, never overlapping a neighbour, so one
    channel's utterances never overlap either."""
    windows: list[Span] = []
    limit = WINDOW_S - 2 * EDGE_PAD_S
    for channel in sorted({sp.channel for sp in spans}):
        raw: list[list[float]] = []
        for sp in sorted((sp for sp in spans if sp.channel == channel), key=lambda sp: sp.start_s):
            start, end = max(0.0, sp.start_s), min(duration_s, sp.end_s)
            if raw and start < raw[-1][1]:
                start = raw[-1][1]  # overlapping spans: decode each stretch once
            if end <= start:
                continue
            if raw and end - raw[-1][0] <= limit:
                raw[-1][1] = end
                continue
            while end - start > limit:
                raw.append([start, start + limit])
                start += limit
            raw.append([start, end])
        for k, (start, end) in enumerate(raw):
            lo = (raw[k - 1][1] + start) / 2 if k else 0.0
            hi = (end + raw[k + 1][0]) / 2 if k + 1 < len(raw) else duration_s
            windows.append(Span(channel, round(max(lo, start - EDGE_PAD_S), 3),
                                round(min(hi, end + EDGE_PAD_S), 3)))
    return windows


def transcribe(
    model: AsrModel,
    audio: DecodedAudio,
    channel_roles: dict[int, str],
    speech: Sequence[Span] | None = None,
    language: str | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Transcript rows (the `transcript.utterances` shape) of every channel: one utterance per
    sentence or stretch of speech without a pause over a second, speaker named after the channel's
    role, words with absolute times. ``speech``: where people talk (the stored VAD segments); None
    decodes each whole channel. ``language``: a code ("en", "de-DE") or name; None detects it per
    window. ``progress(done, total)`` is called after each batch of windows."""
    if speech is None:
        speech = [Span(ch, 0.0, audio.duration_s) for ch in range(audio.channels)]
    windows = plan_windows(speech, audio.duration_s)
    forced = _language_id(model, language)
    batch_size = max(1, batch_size)
    # The guard only ever lowers the size (after a CUDA out-of-memory), never above the setting.
    model.guard.max_batch = min(model.guard.max_batch, batch_size)
    roles = [channel_roles.get(ch, "unknown") for ch in range(audio.channels)]
    utterances: list[Utterance] = []
    done = 0
    for start in range(0, len(windows), batch_size):
        chunk = windows[start: start + batch_size]
        clips = [_clip(audio, w, model.sample_rate) for w in chunk]
        results = model.guard.run(lambda items: _decode_batch(model, list(items), forced), clips)
        for window, (words, lang) in zip(chunk, results, strict=True):
            name = speaker_name(roles[window.channel], window.channel, roles)
            absolute = [Word(round(window.start_s + a, 3), round(window.start_s + b, 3), text)
                        for a, b, text in words]
            utterances.extend(_utterances(absolute, name, window.channel, lang in SPACELESS))
        done += len(chunk)
        if progress is not None:
            progress(done, len(windows))
    utterances.sort(key=lambda u: (u.start_s, u.channel or 0))
    return to_rows(utterances)


def base_language(tag: str) -> str:
    """"de-DE", "de_DE", " DE " → "de": the language part of a tag, as the recognisers key them."""
    return tag.strip().lower().replace("_", "-").split("-")[0]


def _language_id(model: AsrModel, language: str | None) -> int | None:
    if not language or not model.languages:
        return None
    code = base_language(language)
    if code not in model.languages:
        from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

        code = TO_LANGUAGE_CODE.get(language.strip().lower(), code)
    if code not in model.languages:
        log.warning("ASR: language %r is not one of the checkpoint's; detecting it instead", language)
        return None
    return model.languages[code]


def _clip(audio: DecodedAudio, window: Span, rate: int) -> np.ndarray:
    wave = audio_store.slice_mono(audio, window.channel, window.start_s, window.end_s)
    return to_model_rate(wave, audio.sample_rate, rate)


def _decode_batch(model: AsrModel, clips: list[np.ndarray], forced_language: int | None) -> list[
    tuple[list[tuple[float, float, str]], str]
]:
    """(words relative to each clip's start, language code) per clip."""
    import torch
    from transformers import GenerationConfig, GenerationMixin

    feats = model.processor.feature_extractor(clips, sampling_rate=model.sample_rate, return_tensors="pt")
    features = feats.input_features.to(model.device, model.dtype)
    with torch.inference_mode():
        encoded = model.model.get_encoder()(features)
        start = torch.full((len(clips), 1), model.sot, dtype=torch.long, device=model.device)
        if model.transcribe is None:
            prompt = start
            lang_ids: list[int | None] = [None] * len(clips)
        else:
            if forced_language is None:
                # The language token the model finds likeliest after <|startoftranscript|>.
                logits = model.model(encoder_outputs=encoded, decoder_input_ids=start).logits[:, -1]
                ids = torch.tensor(list(model.languages.values()), device=model.device)
                chosen = ids[logits[:, ids].argmax(dim=-1)]
            else:
                chosen = torch.full((len(clips),), forced_language, dtype=torch.long, device=model.device)
            task = torch.full_like(chosen, model.transcribe)
            prompt = torch.stack([start[:, 0], chosen, task], dim=1)
            lang_ids = [int(i) for i in chosen.tolist()]
        prompt = torch.cat([prompt, torch.full_like(start, model.no_timestamps)], dim=1)
        config = GenerationConfig(
            max_new_tokens=model.max_new_tokens, do_sample=False, num_beams=1,
            eos_token_id=model.eos, pad_token_id=model.eos, decoder_start_token_id=model.sot,
            suppress_tokens=model.suppress, begin_suppress_tokens=model.begin_suppress or None,
        )
        out = GenerationMixin.generate(model.model, encoder_outputs=encoded, decoder_input_ids=prompt,
                                       generation_config=config)
        texts = [_text_tokens(row[prompt.shape[1]:].tolist(), model.eos) for row in out]
        # One teacher-forced pass over prompt + text + end-of-text for the alignment heads.
        longest = max((len(t) for t in texts), default=0)
        tokens = torch.full((len(clips), prompt.shape[1] + longest + 1), model.eos, dtype=torch.long,
                            device=model.device)
        tokens[:, : prompt.shape[1]] = prompt
        for i, text in enumerate(texts):
            tokens[i, prompt.shape[1]: prompt.shape[1] + len(text)] = torch.tensor(text, dtype=torch.long)
        attn = model.model(encoder_outputs=encoded, decoder_input_ids=tokens, output_attentions=True)
        heads = torch.stack([attn.cross_attentions[layer][:, head] for layer, head in model.alignment_heads],
                            dim=1).float().cpu().numpy()
    code_of = {i: code for code, i in model.languages.items()}
    results = []
    for i, (text, clip) in enumerate(zip(texts, clips, strict=True)):
        frames = max(1, min(heads.shape[-1], math.ceil(len(clip) / model.sample_rate * FRAMES_PER_S)))
        rows = heads[i, :, prompt.shape[1] - 1: prompt.shape[1] + len(text), :frames]
        lang_id = lang_ids[i]
        lang = "en" if lang_id is None else code_of.get(lang_id, "")  # English-only checkpoints
        times = _token_starts(rows) if text else np.zeros(1)
        results.append((_words(model, text, times, lang in SPACELESS, len(clip) / model.sample_rate), lang))
    return results


def _text_tokens(ids: list[int], eos: int) -> list[int]:
    out = []
    for token in ids:
        if token == eos:
            break
        if token < eos:  # Whisper's text tokens precede every special token
            out.append(token)
    return out


def _token_starts(weights: np.ndarray) -> np.ndarray:
    """Start time (s) of each row's token, rows = text tokens + end-of-text, from attention weights
    (heads, rows, frames): normalise each head over tokens, smooth along time, average, then DTW."""
    from scipy.ndimage import median_filter

    std = weights.std(axis=-2, keepdims=True)
    norm = (weights - weights.mean(axis=-2, keepdims=True)) / np.where(std > 0, std, 1.0)
    norm = median_filter(norm, size=(1, 1, MEDIAN_WIDTH), mode="nearest")
    rows, cols = _dtw(-norm.mean(axis=0))
    first = np.concatenate([[True], np.diff(rows) > 0])
    return cast(np.ndarray, cols[first].astype(np.float64) / FRAMES_PER_S)


def _dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment of rows (tokens) to columns (frames) of least total cost. Each row is
    computed at once: D[i, j] = S[j] + min_{k≤j}(A[k] - S[k-1]), S the row's cumulative cost and A
    the best entry from the row above (diagonal or vertical)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        above = np.minimum(acc[i - 1, :-1], acc[i - 1, 1:])
        csum = np.cumsum(cost[i - 1])
        acc[i, 1:] = csum + np.minimum.accumulate(above - (csum - cost[i - 1]))
    path_rows, path_cols = [], []
    i, j = n, m
    while i > 0 and j > 0:
        path_rows.append(i - 1)
        path_cols.append(j - 1)
        step = int(np.argmin([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]]))
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return np.array(path_rows[::-1]), np.array(path_cols[::-1])


def _words(model: AsrModel, tokens: list[int], starts: np.ndarray, spaceless: bool, length_s: float) -> list[
    tuple[float, float, str]
]:
    """Group tokens into words (a token opening with a space starts one; punctuation sticks to the
    word before it); a word spans from its first token's start to the next token's start."""
    tokenizer = model.processor.tokenizer
    groups: list[list[int]] = []
    for k, token in enumerate(tokens):
        piece = tokenizer.decode([token])
        opens = piece.startswith(" ") or (spaceless and "\ufffd" not in piece)
        if not groups or (opens and tokenizer.decode(tokens[groups[-1][0]: k]).strip()):
            groups.append([k])
        else:
            groups[-1].append(k)
    out = []
    for group in groups:
        text = _printable(tokenizer.decode([tokens[k] for k in group])).strip()
        if not text:
            continue
        a = float(min(starts[group[0]], length_s))
        b = float(min(max(starts[min(group[-1] + 1, len(starts) - 1)], a), length_s))
        out.append((a, b, text))
    return out


def _printable(text: str) -> str:
    # PostgreSQL's JSON cannot hold NUL; other control characters are noise in a transcript.
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cc" or ch == " ")


def _utterances(words: list[Word], speaker: str, channel: int, spaceless: bool) -> list[Utterance]:
    """Split a window's words at sentence ends and at pauses over WORD_GAP_S."""
    out: list[Utterance] = []
    current: list[Word] = []
    joiner = "" if spaceless else " "

    def close() -> None:
        if current:
            text = joiner.join(w.text for w in current)
            out.append(Utterance(current[0].start_s, max(current[-1].end_s, current[0].start_s), text,
                                 speaker, channel, tuple(current)))
            current.clear()

    for word in words:
        if current and word.start_s - current[-1].end_s > WORD_GAP_S:
            close()
        current.append(word)
        if word.text.endswith(SENTENCE_END):
            close()
    close()
    return out
