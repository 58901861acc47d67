"""Stage 2: find speech per channel with silero-vad and cut it into 1.5–10 s speaker segments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.pipeline.contracts import DecodedAudio, SpeechSegment
from worker.pipeline.speech import vad_scoring

# Anything shorter than this after merging is a click or a breath, not an utterance.
MIN_KEEP_S = 0.4
# A short utterance is joined to a neighbour this close rather than analysed alone.
SHORT_JOIN_GAP_S = 2.0
# silero-vad scores 512-sample windows of 16 kHz audio (vad_scoring: which windows, how batched).
VAD_RATE = 16_000


@dataclass(frozen=True)
class SegmentationConfig:
    threshold: float = 0.5
    min_segment_s: float = 1.5
    max_segment_s: float = 10.0
    merge_gap_s: float = 0.6


def load_model(device: str = "cpu") -> Any:
    """The silero-vad network; its weights ship inside the pip package. VAD always runs on CPU:
    it is a tiny recurrent model where GPU launch overhead costs more than it saves. The ONNX
    export under onnxruntime ran 2.0x faster than the TorchScript one on a 30-min channel
    (10.0 s vs 20.2 s, one thread) with identical speech regions."""
    from silero_vad import load_silero_vad

    del device
    return load_silero_vad(onnx=True)


def run(
    model: Any,
    audio: DecodedAudio,
    channel_roles: dict[int, str],
    config: SegmentationConfig,
) -> list[SpeechSegment]:
    """Segments of every channel, in call-time order, indexed from 0."""
    spans: list[tuple[float, float, int]] = []
    for channel in range(audio.channels):
        regions = speech_regions(model, audio.samples[channel], audio.sample_rate, config.threshold)
        for start, end in shape_segments(regions, config):
            spans.append((start, end, channel))
    spans.sort(key=lambda s: (s[0], s[2]))
    segments = []
    roles = [channel_roles.get(channel, "unknown") for channel in range(audio.channels)]
    for index, (start, end, channel) in enumerate(spans):
        role = roles[channel]
        segments.append(SpeechSegment(index=index, channel=channel, role=role,
                                      speaker=speaker_name(role, channel, roles),
                                      start_s=round(start, 3), end_s=round(end, 3)))
    return segments


def speaker_name(role: str, channel: int, roles: Sequence[str]) -> str:
    """One speaker per channel: the role, unless two channels share it ("customer" on both legs of
    a conference: `customer_0`, `customer_1`, so baselines never mix two voices); `speaker_N` for a
    channel without a role. Our own transcripts name their speakers the same way."""
    if role == "unknown":
        return f"speaker_{channel}"
    return role if roles.count(role) == 1 else f"{role}_{channel}"


def speech_regions(model: Any, samples: np.ndarray, sample_rate: int, threshold: float) -> list[
    tuple[float, float]
]:
    """Speech (start_s, end_s) of one channel. The channel may be an int16 memory map of hours of
    audio: only the windows being scored (and a chunk at a time for the loudness gate) ever become
    float32, so memory does not grow with the call. The probabilities go through silero's own
    post-processing (``get_speech_timestamps``' rules)."""
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    if samples.size < sample_rate // 10:
        return []
    if sample_rate != VAD_RATE:
        raise ValueError(f"VAD runs on {VAD_RATE} Hz audio, got {sample_rate} Hz")
    total = int(samples.shape[0])
    probs = vad_scoring.window_probs(model.session, samples)
    stamps = get_speech_timestamps_from_probs(
        probs.tolist(), sampling_rate=sample_rate, threshold=threshold, min_speech_duration_ms=250,
        min_silence_duration_ms=150, speech_pad_ms=60, audio_length_samples=total)
    return [(s["start"] / sample_rate, s["end"] / sample_rate) for s in stamps]


def shape_segments(regions: list[tuple[float, float]], config: SegmentationConfig) -> list[
    tuple[float, float]
]:
    """Merge close regions, attach short ones to a neighbour, split long ones evenly."""
    merged: list[list[float]] = []
    for start, end in regions:
        close = bool(merged) and start - merged[-1][1] <= config.merge_gap_s
        if close and end - merged[-1][0] <= config.max_segment_s:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])

    joined: list[list[float]] = []
    for seg in merged:
        if joined:
            prev = joined[-1]
            short = (seg[1] - seg[0] < config.min_segment_s) or (prev[1] - prev[0] < config.min_segment_s)
            if short and seg[0] - prev[1] <= SHORT_JOIN_GAP_S and seg[1] - prev[0] <= config.max_segment_s:
                prev[1] = seg[1]
                continue
        joined.append(list(seg))

    out: list[tuple[float, float]] = []
    for start, end in joined:
        length = end - start
        if length < MIN_KEEP_S:
            continue
        pieces = max(1, math.ceil(length / config.max_segment_s))
        step = length / pieces
        for i in range(pieces):
            out.append((start + i * step, start + (i + 1) * step if i < pieces - 1 else end))
    return out
