"""The VAD's cheap path against silero's own one-window-at-a-time loop, on real speech: silence
never reaches the network, a line that never goes quiet is scored in pieces cut at pauses, and the
speech regions (after silero's rules) are those of the full loop to within a few windows on the
demo call, the escalation call (8 kHz μ-law) and the demo call under line noise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.support import EXAMPLE
from worker.pipeline.media import decode
from worker.pipeline.speech import vad, vad_scoring

ESCALATION = EXAMPLE.parent / "escalation_call.ogg"


class CountingSession:
    """The real ONNX session, counting the windows it is given."""

    def __init__(self, session: Any) -> None:
        self.session, self.windows = session, 0

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.windows += int(feeds["input"].shape[0])
        return self.session.run(names, feeds)


@pytest.fixture(scope="module")
def session() -> Any:
    return vad.load_model().session


def _regions(probs: np.ndarray, size: int) -> list[tuple[float, float]]:
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    stamps = get_speech_timestamps_from_probs(
        probs.tolist(), sampling_rate=16_000, threshold=0.5, min_speech_duration_ms=250,
        min_silence_duration_ms=150, speech_pad_ms=60, audio_length_samples=size)
    return [(s["start"] / 16_000, s["end"] / 16_000) for s in stamps]


def _channels(path: Any) -> list[np.ndarray]:
    audio = decode.decode(path, 16_000)
    return [np.asarray(audio.samples[c], dtype=np.float32) for c in range(audio.channels)]


def _same_segments(session: Any, samples: np.ndarray, tolerance_s: float, late_starts: int = 0) -> None:
    """Same segments to within ``tolerance_s``, except up to ``late_starts`` starts that may come at
    most 0.5 s late (a soft word just before a pause after a long silence)."""
    full = _regions(vad_scoring.one_window_per_call(session, samples), samples.size)
    cheap = _regions(vad_scoring.window_probs(session, samples), samples.size)
    config = vad.SegmentationConfig()
    before, after = vad.shape_segments(full, config), vad.shape_segments(cheap, config)
    assert len(after) == len(before) >= 2
    late = 0
    for (a0, b0), (a1, b1) in zip(before, after, strict=True):
        assert abs(b0 - b1) <= tolerance_s, (before, after)
        if abs(a0 - a1) > tolerance_s:
            late += 1
            assert 0 < a1 - a0 <= 0.5, (before, after)
    assert late <= late_starts, (before, after)


def test_silence_never_reaches_the_network(session: Any) -> None:
    customer = _channels(EXAMPLE)[1]  # three sentences, digital silence between them
    counting = CountingSession(session)
    probs = vad_scoring.window_probs(counting, customer)
    loud = vad_scoring.window_power(customer, probs.size) >= 10 ** (vad_scoring.GATE_DBFS / 10)
    assert loud.sum() < counting.windows < 0.6 * probs.size, "only sound and its surroundings are scored"
    jobs = vad_scoring.plan(vad_scoring.window_power(customer, probs.size))
    scored = np.zeros(probs.size, dtype=bool)
    for first, _, length in jobs:
        scored[first: first + length] = True
    assert not probs[~scored].any(), "a window the gate kept away is not speech"
    assert scored[loud].all()


def test_regions_match_silero_loop_on_calls(session: Any) -> None:
    for samples in _channels(EXAMPLE):
        _same_segments(session, samples, tolerance_s=0.15)
    # The customer's "Oh, wonderful, …" after nine seconds of silence: silero's loop, its state
    # shaped by that silence, hears the short "Oh," that a stretch starting afresh misses.
    agent, customer = _channels(ESCALATION)
    _same_segments(session, agent, tolerance_s=0.15)
    _same_segments(session, customer, tolerance_s=0.15, late_starts=1)


def test_a_line_that_never_goes_quiet_is_scored_in_pieces(session: Any) -> None:
    rng = np.random.default_rng(0)
    # The demo call twice over, under line noise at about -55 dBFS: the gate never closes.
    customer = np.tile(_channels(EXAMPLE)[1], 2)
    noisy = customer + rng.normal(0.0, 0.0018, customer.size).astype(np.float32)
    power = vad_scoring.window_power(noisy, -(-noisy.size // vad_scoring.WINDOW))
    jobs = vad_scoring.plan(power)
    assert len(jobs) >= 2 and all(warm == vad_scoring.SPLIT_WARMUP for _, warm, _ in jobs[1:])
    for first, warm, _ in jobs[1:]:
        cut = first + warm
        assert power[cut - vad_scoring.CUT_SPAN: cut].mean() < np.median(power), "cut in a pause"
    counting = CountingSession(session)
    vad_scoring.window_probs(counting, noisy)
    assert counting.windows < power.size * 1.1
    _same_segments(session, noisy, tolerance_s=0.15)
