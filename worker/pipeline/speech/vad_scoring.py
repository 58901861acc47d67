"""silero-vad's speech probability for every 32 ms window of a channel, computed cheaply.

VAD was the largest stage of a call without words: silero's ONNX network called once per
512-sample window, one call after the other (about 230 µs each, most of it per-call overhead on a
network this small). Two things make it cheaper without changing what decides a segment:

- Silence never reaches the network. A window quieter than GATE_DBFS (far below speech: the floor
  of a quiet line, or digital silence) that is more than HANGOVER windows after sound and WARMUP
  windows before it gets probability 0, which is what silero gives it anyway. silero keeps a high
  probability through the pauses inside speech and for a while after it, so the windows near sound
  are always scored, and a stretch starts from silero's fresh state (as at the start of a file) on
  WARMUP windows of the quiet before it.
- What remains is scored many stretches at a time: the stretches are packed into up to LANES rows of
  one batched ONNX call, each row with its own recurrent state (the network treats rows
  independently: a row's output is bit-identical whatever its neighbours are). A stretch longer
  than MAX_STRETCH windows (a line that never goes quiet) is cut into pieces; each piece first
  re-scores the SPLIT_WARMUP windows before it, discarding those outputs, so its state has settled.

A channel that is sound from start to end is therefore scored as pieces rather than in one pass;
silero's state forgets within a couple of seconds, and the regions (after silero's own rules:
minimum speech and silence, padding) differ from the one-pass ones by a window here and there
(docs/BENCHMARKS.md, "Speech recognition", has the comparison).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

import numpy as np

WINDOW = 512  # silero's window at 16 kHz
CONTEXT = 64  # samples of the previous window silero's ONNX export prepends
GATE_DBFS = -60.0
HANGOVER = 32  # windows (1.0 s) scored after the last sound
WARMUP = 16  # windows (0.5 s) scored before the first sound
MAX_STRETCH = 1875  # windows (60 s) in one piece
CUT_SPAN = 16  # windows (0.5 s) of quiet sought where a long stretch is cut
SPLIT_WARMUP = 64  # windows (2 s) re-scored before a piece cut out of a longer stretch
LANES = 32
# The loudness pass reads a minute of the channel at a time, so an hours-long memory-mapped channel
# never becomes float32 all at once.
GATE_CHUNK = 1875


def window_probs(session: Any, samples: np.ndarray) -> np.ndarray:
    """Probability of speech per window of one 16 kHz channel (the last window zero-padded)."""
    total = int(samples.shape[0])
    count = -(-total // WINDOW)
    probs = np.zeros(count, dtype=np.float32)
    jobs = plan(window_power(samples, count))
    if jobs:
        _score(session, _Windows(samples), jobs, probs)
    return probs


def window_power(samples: np.ndarray, count: int) -> np.ndarray:
    """Mean square of each window's samples, scaled to [-1, 1]."""
    power = np.zeros(count, dtype=np.float32)
    for first in range(0, count, GATE_CHUNK):
        chunk = as_float(samples[first * WINDOW: (first + GATE_CHUNK) * WINDOW])
        if chunk.size % WINDOW:
            chunk = np.pad(chunk, (0, WINDOW - chunk.size % WINDOW))
        rows = chunk.reshape(-1, WINDOW)
        power[first: first + rows.shape[0]] = np.einsum("ij,ij->i", rows, rows) / WINDOW
    return power


def plan(power: np.ndarray) -> list[tuple[int, int, int]]:
    """The stretches to score, as (first window, windows whose output is discarded, windows)."""
    loud = power >= np.float32(10.0 ** (GATE_DBFS / 10.0))
    count = loud.size
    sums = np.concatenate([[0], np.cumsum(loud, dtype=np.int64)])
    at = np.arange(count)
    # Window i is scored when a loud window lies in [i - HANGOVER, i + WARMUP].
    near = sums[np.minimum(count, at + WARMUP + 1)] - sums[np.maximum(0, at - HANGOVER)] > 0
    edges = np.diff(np.concatenate([[0], near.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    jobs = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        cuts = _cuts(power, start, end)
        for piece, until in itertools.pairwise(cuts):
            warm = 0 if piece == start else min(SPLIT_WARMUP, piece)
            jobs.append((piece - warm, warm, until - piece + warm))
    return jobs


def _cuts(power: np.ndarray, start: int, end: int) -> list[int]:
    """Where a long stretch is cut: at the quietest half second of the last quarter of each
    MAX_STRETCH, a pause where one is to be had, so the state a piece starts from matters least."""
    cuts = [start]
    while end - cuts[-1] > MAX_STRETCH:
        low, high = cuts[-1] + 3 * MAX_STRETCH // 4, cuts[-1] + MAX_STRETCH
        quiet = np.convolve(power[low - CUT_SPAN: high], np.ones(CUT_SPAN, dtype=np.float32), "valid")
        cuts.append(low + int(np.argmin(quiet)))  # quiet[k] ends just before low + k
    return [*cuts, end]


class _Windows:
    """Gathers (context + window) rows of one channel by window index, -1 giving a silent row."""

    def __init__(self, samples: np.ndarray) -> None:
        self.full = int(samples.shape[0]) // WINDOW
        # A view, also of a strided memory-mapped channel: nothing is read until gathered.
        self.view = samples[: self.full * WINDOW].reshape(self.full, WINDOW)
        tail = as_float(samples[self.full * WINDOW:])
        self.tail = np.pad(tail, (0, WINDOW - tail.size)) if tail.size else None

    def gather(self, index: np.ndarray) -> np.ndarray:
        rows = np.zeros((index.size, CONTEXT + WINDOW), dtype=np.float32)
        inner = (index >= 0) & (index < self.full)
        if inner.any():
            rows[inner, CONTEXT:] = as_float(self.view[index[inner]])
        if self.tail is not None:
            rows[index == self.full, CONTEXT:] = self.tail
        before = (index > 0) & (index <= self.full)
        if before.any():
            rows[before, :CONTEXT] = as_float(self.view[index[before] - 1, -CONTEXT:])
        return rows


def _score(session: Any, windows: _Windows, jobs: list[tuple[int, int, int]], probs: np.ndarray) -> None:
    lanes = min(LANES, len(jobs))
    # Longest stretch first onto the least-loaded lane: the lanes end close together.
    heap = [(0, lane) for lane in range(lanes)]
    assigned: list[list[tuple[int, int, int]]] = [[] for _ in range(lanes)]
    for job in sorted(jobs, key=lambda j: -j[2]):
        load, lane = heapq.heappop(heap)
        assigned[lane].append(job)
        heapq.heappush(heap, (load + job[2], lane))
    # Lanes by load, longest first: the lanes still busy at any step are the first rows, and only
    # those are sent, so a lane that has run out costs nothing.
    assigned.sort(key=lambda lane_jobs: -sum(job[2] for job in lane_jobs))
    busy = np.array([sum(job[2] for job in lane_jobs) for lane_jobs in assigned])
    steps = int(busy[0])
    index = np.full((lanes, steps), -1, dtype=np.int64)
    reset = np.zeros((lanes, steps), dtype=bool)
    keep = np.zeros((lanes, steps), dtype=bool)
    for lane, lane_jobs in enumerate(assigned):
        t = 0
        for first, warm, length in lane_jobs:
            index[lane, t: t + length] = np.arange(first, first + length)
            reset[lane, t] = True
            keep[lane, t + warm: t + length] = True
            t += length
    state = np.zeros((2, lanes, 128), dtype=np.float32)
    rate = np.array(16_000, dtype=np.int64)
    for t in range(steps):
        rows = int(np.count_nonzero(busy > t))
        state[:, :rows][:, reset[:rows, t]] = 0.0
        out, new_state = session.run(None, {"input": windows.gather(index[:rows, t]),
                                            "state": state[:, :rows], "sr": rate})
        state[:, :rows] = new_state
        kept = keep[:rows, t]
        probs[index[:rows, t][kept]] = np.asarray(out, dtype=np.float32).reshape(-1)[kept]


def one_window_per_call(session: Any, samples: np.ndarray) -> np.ndarray:
    """The probabilities as silero's own loop computes them, the reference `window_probs` is checked
    against (tests, bench/bench_asr.py --compare-vad): every window through the network, one call
    each, state carried from the first window to the last."""
    count = -(-int(samples.shape[0]) // WINDOW)
    probs = np.zeros(count, dtype=np.float32)
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros(CONTEXT, dtype=np.float32)
    rate = np.array(16_000, dtype=np.int64)
    step = GATE_CHUNK * WINDOW
    for offset in range(0, int(samples.shape[0]), step):
        chunk = as_float(samples[offset: offset + step])
        chunk = np.pad(chunk, (0, (-chunk.size) % WINDOW))
        for start in range(0, chunk.size, WINDOW):
            window = chunk[start: start + WINDOW]
            x = np.concatenate([context, window])[None, :]
            out, state = session.run(None, {"input": x, "state": state, "sr": rate})
            probs[offset // WINDOW + start // WINDOW] = float(out.reshape(-1)[0])
            context = window[-CONTEXT:]
    return probs


def as_float(pcm: np.ndarray) -> np.ndarray:
    """Samples as contiguous float32 in [-1, 1] (int16 caches are scaled, float input kept)."""
    if pcm.dtype == np.int16:
        out = np.empty(pcm.shape, dtype=np.float32)
        np.multiply(pcm, np.float32(1.0 / 32768.0), out=out)
        return out
    return np.ascontiguousarray(pcm, dtype=np.float32)
