"""The FunASR speech front end in numpy (no torchaudio): Kaldi-style log-mel filterbanks, low frame
rate stacking (LFR) and the release's global CMVN from `am.mvn`.

Filterbanks follow Kaldi's `compute-fbank` defaults as FunASR calls them: samples scaled to the
int16 range, 25 ms frames every 10 ms with no frames past the end (snip_edges), DC offset removed,
pre-emphasis 0.97, Hamming window, 512-point power spectrum, triangular mel filters from 20 Hz to
Nyquist spaced on 1127·ln(1 + f/700), natural log floored at float32 epsilon, no energy term. No
dither: the release adds ±1 LSB of noise during training; leaving it out keeps answers reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import cast

import numpy as np


@dataclass(frozen=True)
class FrontEnd:
    sample_rate: int = 16_000
    n_mels: int = 80
    frame_ms: float = 25.0
    shift_ms: float = 10.0
    lfr_m: int = 7
    lfr_n: int = 6

    @property
    def frame_length(self) -> int:
        return int(self.sample_rate * self.frame_ms / 1000)

    @property
    def frame_shift(self) -> int:
        return int(self.sample_rate * self.shift_ms / 1000)

    @property
    def seconds_per_output(self) -> float:
        """Seconds of audio per stacked (LFR) frame: the encoder's time step."""
        return self.shift_ms * self.lfr_n / 1000


def _mel(freq: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(freq, np.float64) / 700.0)


@lru_cache(maxsize=8)
def mel_banks(n_mels: int, n_fft: int, sample_rate: int, low_hz: float = 20.0) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters; the Nyquist bin gets no weight, as in Kaldi."""
    half = n_fft // 2
    mel_low, mel_high = _mel(low_hz), _mel(sample_rate / 2)
    step = (mel_high - mel_low) / (n_mels + 1)
    bins = _mel(np.arange(half) * sample_rate / n_fft)[None, :]
    left = mel_low + step * np.arange(n_mels)[:, None]
    center, right = left + step, left + 2 * step
    up = (bins - left) / (center - left)
    down = (right - bins) / (right - center)
    weights = np.maximum(0.0, np.minimum(up, down))
    return np.pad(weights, ((0, 0), (0, 1))).astype(np.float32)


def fbank(wave: np.ndarray, fe: FrontEnd) -> np.ndarray:
    """(frames, n_mels) log-mel filterbank of a mono float waveform in [-1, 1]."""
    x = np.asarray(wave, np.float32).reshape(-1) * 32768.0
    length, shift = fe.frame_length, fe.frame_shift
    if x.size < length:  # shorter than one frame: one frame, zero-padded
        x = np.pad(x, (0, length - x.size))
    count = 1 + (x.size - length) // shift
    frames = np.lib.stride_tricks.as_strided(x, (count, length), (x.strides[0] * shift, x.strides[0])).astype(
        np.float64)
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= 0.97 * frames[:, :-1].copy()
    frames[:, 0] *= 1.0 - 0.97
    frames *= np.hamming(length)  # 0.54 - 0.46 cos(2πn/(N-1)), Kaldi's "hamming"
    n_fft = 1 << int(np.ceil(np.log2(length)))
    power = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2
    energies = power.astype(np.float32) @ mel_banks(fe.n_mels, n_fft, fe.sample_rate).T
    return cast(np.ndarray, np.log(np.maximum(energies, np.finfo(np.float32).eps)).astype(np.float32))


def stack_lfr(feats: np.ndarray, m: int, n: int) -> np.ndarray:
    """Low frame rate: every n-th frame becomes the concatenation of m frames centred on it (the
    first frame repeated (m-1)//2 times in front, the last repeated past the end)."""
    if m == 1 and n == 1:
        return feats
    padded = np.concatenate([np.repeat(feats[:1], (m - 1) // 2, axis=0), feats])
    outputs = int(np.ceil(feats.shape[0] / n))
    index = np.minimum(np.arange(outputs)[:, None] * n + np.arange(m)[None, :], padded.shape[0] - 1)
    return cast(np.ndarray, padded[index].reshape(outputs, m * feats.shape[1]))


def read_cmvn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """am.mvn (a Kaldi nnet1 text file): the `<AddShift>` and `<Rescale>` vectors; features are
    normalised as (x + shift) * scale."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: dict[str, np.ndarray] = {}
    for i, line in enumerate(lines[:-1]):
        head = line.split()[:1]
        if head and head[0] in ("<AddShift>", "<Rescale>"):
            values = lines[i + 1].split()
            if values[:1] == ["<LearnRateCoef>"]:
                found[head[0]] = np.array(values[3:-1], np.float32)
    if set(found) != {"<AddShift>", "<Rescale>"} or found["<AddShift>"].shape != found["<Rescale>"].shape:
        raise ValueError(f"{path} is not a FunASR CMVN file (<AddShift> and <Rescale> of one size)")
    return found["<AddShift>"], found["<Rescale>"]


def features(wave: np.ndarray, fe: FrontEnd, cmvn: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """What the encoder reads: fbank → LFR → CMVN, (steps, n_mels * lfr_m) float32."""
    out = stack_lfr(fbank(wave, fe), fe.lfr_m, fe.lfr_n)
    if cmvn is not None:
        shift, scale = cmvn
        out = (out + shift[: out.shape[1]]) * scale[: out.shape[1]]
    return out.astype(np.float32)
