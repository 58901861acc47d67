"""Cheap prosody of one stretch of speech: pitch, loudness, syllable rate and where they peak.

Runs at ingest on every segment of every call, so it is plain vectorised numpy: a YIN-style
F0 tracker (autocorrelation via one batched FFT, cumulative-mean-normalised difference) instead
of pyin, whose Viterbi decoding costs ~100x more. Every output is a finite Python float so the
result can go straight into a JSON column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import cast

import numpy as np

from worker.pipeline.contracts import Acoustics

FMIN_HZ = 60.0
FMAX_HZ = 500.0
FRAME_S = 0.040  # long enough for two periods at FMIN plus the lag range
HOP_S = 0.010
# A frame is "voiced" when its best normalised difference dips below this (YIN's usual 0.1-0.3).
VOICING_THRESHOLD = 0.3
# Frames quieter than this many dB under the loudest frame are treated as pauses, not speech.
SPEECH_RANGE_DB = 30.0
SILENCE_DBFS = -100.0  # floor for log levels: keeps silence finite
MIN_SPEECH_DBFS = -65.0  # below this a frame is room noise, whatever the dynamic range says
PITCH_RATE_HZ = 8000  # F0 under FMAX needs no more; halving 16 kHz makes the tracker ~3x cheaper
MIN_SYLLABLE_GAP_S = 0.1  # nobody produces more than ~10 syllables per second
SYLLABLE_PROMINENCE_DB = 3.0

BASELINE_FIELDS: tuple[str, ...] = ("pitch_hz", "pitch_range_st", "loudness_db", "rate_per_s", "voiced_ratio")
PITCH_FIELDS: frozenset[str] = frozenset({"pitch_hz", "pitch_range_st"})


@dataclass(frozen=True)
class FrameTrack:
    """Frame-level tracks shared by `measure` and the emotion feature extractor."""

    f0_hz: np.ndarray  # (n_frames,), 0 where unvoiced
    level_db: np.ndarray  # (n_frames,), RMS level in dBFS, floored at SILENCE_DBFS
    speech: np.ndarray  # (n_frames,) bool, loud enough to count as speech
    hop_s: float


def _frames(audio: np.ndarray, frame_len: int, hop: int) -> np.ndarray:
    if audio.size < frame_len:
        audio = np.pad(audio, (0, frame_len - audio.size))
    n_frames = 1 + (audio.size - frame_len) // hop
    return np.lib.stride_tricks.as_strided(
        audio,
        shape=(n_frames, frame_len),
        strides=(audio.strides[0] * hop, audio.strides[0]),
        writeable=False,
    )


def _yin_f0(frames: np.ndarray, sample_rate: int) -> np.ndarray:
    """F0 per frame (0 = unvoiced) from the cumulative-mean-normalised difference function."""
    n_frames, frame_len = frames.shape
    tau_min = max(2, int(sample_rate / FMAX_HZ))
    tau_max = min(frame_len // 2, math.ceil(sample_rate / FMIN_HZ))
    if n_frames == 0 or tau_max <= tau_min + 2:
        return np.zeros(n_frames)
    centred = frames - frames.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(centred, n=2 * frame_len, axis=1)
    acf = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, axis=1)[:, : tau_max + 2]
    # Difference d(tau) with the exact energies of the two overlapping windows (not 2*r(0)).
    sq_cum = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(centred**2, axis=1)], axis=1)
    taus = np.arange(tau_max + 2)
    energy_head = sq_cum[:, frame_len - taus]  # sum of x[0 : L - tau]^2
    energy_tail = sq_cum[:, -1:] - sq_cum[:, taus]  # sum of x[tau : L]^2
    diff = np.maximum(energy_head + energy_tail - 2.0 * acf, 0.0)
    diff[:, 0] = 0.0
    running = np.cumsum(diff[:, 1:], axis=1) / np.arange(1, tau_max + 2)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] / np.maximum(running, 1e-12)

    window = cmnd[:, tau_min : tau_max + 1]
    below = window < VOICING_THRESHOLD
    # YIN's rule: the first dip under the threshold (avoids sub-harmonic octave errors), then
    # slide to the bottom of that dip; frames with no dip fall back to the global minimum.
    first = np.where(below.any(axis=1), below.argmax(axis=1), window.argmin(axis=1))
    rows = np.arange(n_frames)
    for _ in range(window.shape[1]):
        nxt = np.minimum(first + 1, window.shape[1] - 1)
        step = window[rows, nxt] < window[rows, first]
        if not step.any():
            break
        first = np.where(step, nxt, first)
    best = window[rows, first]
    # Parabolic interpolation around the minimum for sub-sample period resolution.
    left = window[rows, np.maximum(first - 1, 0)]
    right = window[rows, np.minimum(first + 1, window.shape[1] - 1)]
    curvature = left + right - 2.0 * best
    shift = np.where(curvature > 1e-9, 0.5 * (left - right) / np.maximum(curvature, 1e-9), 0.0)
    period = tau_min + first + np.clip(shift, -1.0, 1.0)
    f0 = sample_rate / np.maximum(period, 1.0)
    voiced = (best < VOICING_THRESHOLD) & (f0 >= FMIN_HZ) & (f0 <= FMAX_HZ)
    return np.where(voiced, f0, 0.0)


def track(audio: np.ndarray, sample_rate: int) -> FrameTrack:
    """Frame-level F0, level and speech mask of a mono clip (10 ms hop)."""
    samples = np.nan_to_num(np.asarray(audio, dtype=np.float64).reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0)
    frame_len = max(8, round(FRAME_S * sample_rate))
    hop = max(1, round(HOP_S * sample_rate))
    frames = _frames(np.ascontiguousarray(samples), frame_len, hop)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    level_db = np.maximum(20.0 * np.log10(np.maximum(rms, 1e-12)), SILENCE_DBFS)
    loudest = float(level_db.max()) if level_db.size else SILENCE_DBFS
    speech = (level_db > loudest - SPEECH_RANGE_DB) & (level_db > MIN_SPEECH_DBFS)
    f0 = np.zeros(frames.shape[0])
    if speech.any():
        from scipy.signal import resample_poly  # here: the API process imports this module at start

        factor = sample_rate // PITCH_RATE_HZ
        low = resample_poly(samples, 1, factor) if factor >= 2 else samples
        low_rate = sample_rate / factor if factor >= 2 else sample_rate
        low_frames = _frames(
            np.ascontiguousarray(low), max(8, round(FRAME_S * low_rate)), max(1, hop // max(factor, 1))
        )
        # Same hop in seconds, so frame i still means the same instant; only speech frames are tracked.
        rows = np.flatnonzero(speech[: low_frames.shape[0]])
        f0[rows] = _yin_f0(low_frames[rows], round(low_rate))
    return FrameTrack(f0_hz=f0, level_db=level_db, speech=speech, hop_s=hop / sample_rate)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    if values.size < width or width <= 1:
        return values
    kernel = np.ones(width) / width
    return np.convolve(values, kernel, mode="same")


def _finite(value: float, default: float = 0.0) -> float:
    value = float(value)
    return value if math.isfinite(value) else default


def measure(audio: np.ndarray, sample_rate: int) -> Acoustics:
    """Prosody of one clip; silence and very short clips give zeros/floors, never NaN."""
    tr = track(audio, sample_rate)
    voiced = tr.f0_hz > 0
    n_frames = tr.f0_hz.size
    n_speech = int(tr.speech.sum())
    duration_s = max(float(np.asarray(audio).size) / max(sample_rate, 1), 1e-9)

    pitch_hz = pitch_range = 0.0
    pitch_peak_s = 0.0
    if voiced.sum() >= 2:
        f0 = tr.f0_hz[voiced]
        semitones = 12.0 * np.log2(f0 / np.median(f0))
        pitch_hz = float(np.median(f0))
        pitch_range = float(np.percentile(semitones, 90) - np.percentile(semitones, 10))
        # Median over 5 frames so one octave jump does not become "the pitch peak".
        idx = np.flatnonzero(voiced)
        padded = np.pad(f0, 2, mode="edge")
        steady = np.median(np.lib.stride_tricks.sliding_window_view(padded, 5), axis=1)
        pitch_peak_s = float(idx[int(np.argmax(steady))] * tr.hop_s)

    loudness = SILENCE_DBFS
    loudness_peak_s = 0.0
    rate = 0.0
    if n_speech:
        power = 10.0 ** (tr.level_db[tr.speech] / 10.0)
        loudness = 10.0 * math.log10(max(float(power.mean()), 1e-10))
        envelope = _smooth(tr.level_db, 5)
        loudness_peak_s = float(int(np.argmax(envelope)) * tr.hop_s)
        from scipy.signal import find_peaks

        peaks, _ = find_peaks(
            envelope,
            prominence=SYLLABLE_PROMINENCE_DB,
            distance=max(1, round(MIN_SYLLABLE_GAP_S / tr.hop_s)),
        )
        peaks = peaks[tr.speech[peaks] & voiced[peaks]] if peaks.size else peaks
        rate = len(peaks) / max(n_speech * tr.hop_s, HOP_S)

    return Acoustics(
        pitch_hz=_finite(pitch_hz),
        pitch_range_st=_finite(pitch_range),
        loudness_db=_finite(max(loudness, SILENCE_DBFS), SILENCE_DBFS),
        rate_per_s=_finite(rate),
        voiced_ratio=_finite(voiced.sum() / n_frames if n_frames else 0.0),
        pitch_peak_s=_finite(min(pitch_peak_s, duration_s)),
        loudness_peak_s=_finite(min(loudness_peak_s, duration_s)),
    )


def baseline(acoustics: list[Acoustics]) -> Acoustics:
    """A speaker's median acoustics over their segments.

    Pitch fields ignore unvoiced segments (pitch 0) and every field ignores silent ones; the
    peak offsets are per-segment positions, so they have no meaningful median and are omitted.
    An empty result ({}) means "no baseline": callers fall back to absolute norms.
    """
    out: dict[str, float] = {}
    spoken = [a for a in acoustics if a.get("loudness_db", SILENCE_DBFS) > SILENCE_DBFS]
    for name in BASELINE_FIELDS:
        rows = [a for a in spoken if name in a]
        if name in PITCH_FIELDS:
            rows = [a for a in rows if a.get("pitch_hz", 0.0) > 0]
        if rows:
            out[name] = _finite(median(float(a[name]) for a in rows))  # type: ignore[literal-required]
    return cast(Acoustics, out)  # its keys are BASELINE_FIELDS, all of them Acoustics fields
