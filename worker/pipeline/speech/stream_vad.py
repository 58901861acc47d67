"""Streaming segmentation for live calls: silero-vad run chunk by chunk with each channel's own
recurrent state, and segments closed as soon as later audio can no longer change them.

The batch path (`segment.run`) sees the whole call; a live call must hand segments to the infer
queue while the caller is still talking. So this module feeds silero the same 512-sample windows
the batch path feeds it (the same probabilities, chunk for chunk), applies the same start/end rules
(`get_speech_timestamps`' thresholds, minimum speech and silence, padding) and the same shaping
(`segment.shape_segments`), and releases the shaped segment once enough silence follows it:
`merge_gap_s` after a segment of normal length, `SHORT_JOIN_GAP_S` after a short one (which might
still join its neighbour). The same loudness gate as the batch path (`vad_scoring`) keeps silence
from the network: a quiet window is held back until it is known whether sound follows within the
warm-up (then it is scored) or not (probability 0), so in a long silence the VAD decides 0.5 s behind
the audio. Differences from the batch cut: a short utterance right after a released segment is not
glued back onto it, and speech running past `max_segment_s` is cut there instead of split evenly
afterwards (both for latency), and a minute-long stretch of sound is scored in one pass, not cut into
pieces as the batch path does to batch them."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worker.pipeline.speech.vad import MIN_KEEP_S, SHORT_JOIN_GAP_S, SegmentationConfig, shape_segments
from worker.pipeline.speech.vad_scoring import GATE_DBFS, HANGOVER, WARMUP

SAMPLE_RATE = 16_000
WINDOW = 512  # silero's window at 16 kHz
CONTEXT = 64  # samples of the previous window silero prepends (its ONNX export expects them)
# The batch path's get_speech_timestamps arguments (worker/pipeline/speech/vad.py).
MIN_SPEECH_S = 0.25
MIN_SILENCE_S = 0.15
SPEECH_PAD_S = 0.06
GATE_POWER = float(np.float32(10.0 ** (GATE_DBFS / 10.0))) * WINDOW  # summed squares of a window


class VadNet:
    """silero-vad's ONNX network called directly with explicit state, so one session serves every
    channel of every live call (its wrapper keeps one state per Python object)."""

    def __init__(self) -> None:
        import onnxruntime
        from silero_vad.utils_vad import OnnxWrapper

        from worker.pipeline.speech.vad import load_model

        wrapper = load_model()
        assert isinstance(wrapper, OnnxWrapper)
        self.session: Any = wrapper.session
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        del onnxruntime

    def __call__(self, windows: np.ndarray, context: np.ndarray, state: np.ndarray) -> tuple[
        np.ndarray, np.ndarray
    ]:
        """Speech probabilities of B windows (B, 512) given each row's context (B, 64) and state
        (2, B, 128); returns (probabilities (B,), new state)."""
        x = np.concatenate([context, windows], axis=1).astype(np.float32, copy=False)
        out, new_state = self.session.run(None, {"input": x, "state": state, "sr": self._sr})
        return np.asarray(out, dtype=np.float32).reshape(-1), np.asarray(new_state, dtype=np.float32)


@dataclass(frozen=True)
class ClosedSegment:
    channel: int
    start_s: float
    end_s: float


@dataclass
class _Channel:
    """One channel's VAD state and the speech regions not yet released as segments."""

    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT, dtype=np.float32))
    state: np.ndarray = field(default_factory=lambda: np.zeros((2, 1, 128), dtype=np.float32))
    windows_done: int = 0
    since_loud: int = HANGOVER + 1  # windows since the last one above the gate
    held: list[np.ndarray] = field(default_factory=list)  # quiet (context + window) rows undecided
    gated: bool = True  # a window went unscored since the last scored one: the state starts afresh
    # What the network still has to decide, in window order: a row with its reset flag, or None
    # for a gated window (probability 0).
    queue: deque[tuple[np.ndarray, bool] | None] = field(default_factory=deque)
    triggered: bool = False
    speech_start: int = 0  # sample where the open region started
    temp_end: int = 0  # sample where the open region went quiet (0: it has not)
    regions: list[tuple[float, float]] = field(default_factory=list)  # closed, padded, unreleased


class StreamSegmenter:
    """Per-call streaming segmentation: `feed` each channel's 16 kHz float samples as they arrive,
    get back the segments that closed; `finish` at the end of the call closes what is left."""

    def __init__(self, net: VadNet, channels: int, config: SegmentationConfig) -> None:
        self.net = net
        self.config = config
        self.channels = [_Channel() for _ in range(channels)]
        self.threshold = config.threshold
        self.neg_threshold = max(config.threshold - 0.15, 0.01)

    def feed(self, channel_samples: list[np.ndarray]) -> list[ClosedSegment]:
        """``channel_samples[c]``: the next float32 samples of channel c (may be empty)."""
        for ch, samples in zip(self.channels, channel_samples, strict=True):
            if samples.size:
                ch.pending = np.concatenate([ch.pending, samples.astype(np.float32, copy=False)])
        self._run_windows()
        return self._release(final=False)

    def finish(self) -> list[ClosedSegment]:
        """The end of the call: the last partial window is zero-padded (as the batch path does), an
        open region ends with the audio, and every remaining region is released."""
        lengths = [(ch.windows_done + len(ch.held)) * WINDOW + ch.pending.size for ch in self.channels]
        for ch in self.channels:
            if ch.pending.size % WINDOW:
                ch.pending = np.concatenate([ch.pending, np.zeros(WINDOW - ch.pending.size % WINDOW,
                                                                  dtype=np.float32)])
        self._run_windows()
        for ch in self.channels:
            for _ in ch.held:  # no sound follows them
                self._step(ch, 0.0)
            ch.held = []
        for ch, length in zip(self.channels, lengths, strict=True):
            if ch.triggered and length - ch.speech_start > MIN_SPEECH_S * SAMPLE_RATE:
                self._close(ch, ch.speech_start, length, length)
            ch.triggered = False
        return self._release(final=True)

    def position_s(self, channel: int) -> float:
        """How far the VAD has read into a channel (seconds of the call)."""
        return self.channels[channel].windows_done * WINDOW / SAMPLE_RATE

    def _run_windows(self) -> None:
        for ch in self.channels:
            while ch.pending.size >= WINDOW:
                row = np.concatenate([ch.context, ch.pending[:WINDOW]])
                ch.context = row[-CONTEXT:].copy()
                ch.pending = ch.pending[WINDOW:]
                self._gate(ch, row)
        # All channels' queued windows go through the network together, row c = channel c, one
        # step at a time (each window's state depends on the previous one of its channel).
        while True:
            for ch in self.channels:
                while ch.queue and ch.queue[0] is None:
                    ch.queue.popleft()
                    self._step(ch, 0.0)
            ready = [ch for ch in self.channels if ch.queue]
            if not ready:
                return
            items = [ch.queue.popleft() for ch in ready]
            rows = np.stack([item[0] for item in items if item is not None])
            for ch, item in zip(ready, items, strict=True):
                if item is not None and item[1]:
                    ch.state = np.zeros_like(ch.state)
            state = np.concatenate([ch.state for ch in ready], axis=1)
            probs, new_state = self.net(rows[:, CONTEXT:], rows[:, :CONTEXT], state)
            for i, ch in enumerate(ready):
                ch.state = new_state[:, i: i + 1, :].copy()
                self._step(ch, float(probs[i]))

    def _gate(self, ch: _Channel, row: np.ndarray) -> None:
        """The batch path's rule, one window at a time: a window is scored when a window above the
        gate lies within HANGOVER before it or WARMUP after it."""
        window = row[CONTEXT:]
        ch.since_loud = 0 if float(np.dot(window, window)) >= GATE_POWER else ch.since_loud + 1
        if ch.since_loud <= HANGOVER:
            for i, held in enumerate([*ch.held, row]):
                ch.queue.append((held, ch.gated and i == 0))
            ch.held, ch.gated = [], False
            return
        ch.held.append(row)
        if len(ch.held) > WARMUP:
            ch.held.pop(0)
            ch.queue.append(None)
            ch.gated = True

    def _step(self, ch: _Channel, prob: float) -> None:
        """get_speech_timestamps' rules for one window (no maximum speech length there: long
        speech is cut at max_segment_s here, where the batch path splits it afterwards)."""
        cur = ch.windows_done * WINDOW
        ch.windows_done += 1
        if prob >= self.threshold and ch.temp_end:
            ch.temp_end = 0
        if prob >= self.threshold and not ch.triggered:
            ch.triggered, ch.speech_start, ch.temp_end = True, cur, 0
            return
        # Cut early enough that the piece, padded on both sides, stays within max_segment_s.
        longest = (self.config.max_segment_s - 2 * SPEECH_PAD_S) * SAMPLE_RATE
        if ch.triggered and cur - ch.speech_start >= longest:
            self._close(ch, ch.speech_start, cur, None)
            ch.speech_start, ch.temp_end = cur, 0  # still speaking: the next piece starts here
            return
        if prob < self.neg_threshold and ch.triggered:
            if not ch.temp_end:
                ch.temp_end = cur
            if cur - ch.temp_end < MIN_SILENCE_S * SAMPLE_RATE:
                return
            if ch.temp_end - ch.speech_start > MIN_SPEECH_S * SAMPLE_RATE:
                self._close(ch, ch.speech_start, ch.temp_end, None)
            ch.triggered, ch.temp_end = False, 0

    def _close(self, ch: _Channel, start: int, end: int, audio_end: int | None) -> None:
        pad = SPEECH_PAD_S * SAMPLE_RATE
        start_s = max(0.0, start - pad) / SAMPLE_RATE
        end_s = (end + pad if audio_end is None else min(audio_end, end + pad)) / SAMPLE_RATE
        if ch.regions and start_s < ch.regions[-1][1]:
            start_s = ch.regions[-1][1]  # a cut at max_segment_s: pieces never overlap
        ch.regions.append((start_s, end_s))

    def _release(self, final: bool) -> list[ClosedSegment]:
        out: list[ClosedSegment] = []
        for index, ch in enumerate(self.channels):
            if not ch.regions:
                continue
            shaped = shape_segments(ch.regions, self.config)
            # Shaping only ever extends its last segment, so every earlier one is settled.
            settled = shaped if final else shaped[:-1]
            if not final and shaped:
                last = shaped[-1]
                if self._quiet_since(ch, last[1]) > self._wait_after(last):
                    settled = shaped
            if not settled:
                continue
            out += [ClosedSegment(index, round(a, 3), round(b, 3)) for a, b in settled]
            released_to = settled[-1][1]
            # Keep only regions not yet inside a released segment (shaping drops sub-0.4 s blips).
            ch.regions = [r for r in ch.regions if r[0] >= released_to]
        out.sort(key=lambda s: (s.start_s, s.channel))
        return out

    def _quiet_since(self, ch: _Channel, end_s: float) -> float:
        """Seconds of silence after ``end_s`` that are certain: up to the open region's padded
        start while someone speaks, else up to what the VAD has read (less the pad a region
        starting now would get)."""
        if ch.triggered:
            return (ch.speech_start - SPEECH_PAD_S * SAMPLE_RATE) / SAMPLE_RATE - end_s
        return ch.windows_done * WINDOW / SAMPLE_RATE - SPEECH_PAD_S - end_s

    def _wait_after(self, span: tuple[float, float]) -> float:
        if span[1] - span[0] < self.config.min_segment_s:
            return SHORT_JOIN_GAP_S  # a short utterance waits for a neighbour to join
        return self.config.merge_gap_s


def keeps(span: ClosedSegment) -> bool:
    return span.end_s - span.start_s >= MIN_KEEP_S
