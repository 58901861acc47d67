"""Feature extractor of the embedded emotion model: one fixed-length vector per 16 kHz clip.

Three blocks, always in this order (the shipped weights record FEATURE_SPEC and its length):

1. spectral: MFCC 1-20 with deltas and delta-deltas (mean and std over speech frames), plus
   spectral centroid, bandwidth, roll-off, flatness, contrast (7 bands) and zero-crossing rate;
2. prosodic: F0 statistics in semitones, voicing, level dynamics and syllable rate, from the same
   frame tracker that `worker.pipeline.speech.prosody` uses at ingest;
3. speaker-encoder: the 256-d Resemblyzer (GE2E) utterance embedding. It was trained to tell
   speakers apart, but its LSTM state also carries voice quality and arousal, which handcrafted
   statistics miss.

Clips are gain-normalised first, because call levels depend on the line, not the caller's mood;
level *dynamics* (spread, range) are kept.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from typing import cast

import librosa
import numpy as np

from worker.pipeline.speech import prosody

SAMPLE_RATE = 16_000
FEATURE_SPEC = "ser-feat-v1"  # bump whenever anything below changes the numbers
N_MFCC = 20
N_FFT = 512
HOP = 160
TARGET_DBFS = -30.0  # Resemblyzer's own normalisation target
SPEECH_TOP_DB = 35.0  # frames this far under the loudest one are pauses
MIN_SAMPLES = HOP * 4  # anything shorter is padded so every statistic exists
EMBEDDING_DIM = 256
# Resemblyzer analyses 1.6 s windows at 1.3 windows per second (its defaults).
PARTIAL_RATE = 1.3
PARTIAL_MIN_COVERAGE = 0.75

_SPECTRAL_TRACKS = (
    "centroid",
    "bandwidth",
    "rolloff",
    "flatness",
    *(f"contrast{i}" for i in range(7)),
    "zcr",
)
_PROSODIC_NAMES = (
    "f0_mean_st",
    "f0_std_st",
    "f0_p10_st",
    "f0_p90_st",
    "f0_range_st",
    "f0_slope_st_s",
    "f0_delta_abs_st",
    "voiced_ratio",
    "level_std_db",
    "level_range_db",
    "level_delta_abs_db",
    "rate_per_s",
    "pause_ratio",
)


def _names() -> tuple[str, ...]:
    names: list[str] = []
    for kind in ("mfcc", "d_mfcc", "dd_mfcc"):
        names += [f"{kind}{i}_{stat}" for stat in ("mean", "std") for i in range(N_MFCC)]
    names += [f"{t}_{stat}" for stat in ("mean", "std") for t in _SPECTRAL_TRACKS]
    names += list(_PROSODIC_NAMES)
    names += [f"spk{i}" for i in range(EMBEDDING_DIM)]
    return tuple(names)


FEATURE_NAMES: tuple[str, ...] = _names()
N_FEATURES = len(FEATURE_NAMES)


_N_SPECTRAL = 6 * N_MFCC + 2 * len(_SPECTRAL_TRACKS)


class Blocks:
    """Column ranges of each block, for ablations in training."""

    spectral = slice(0, _N_SPECTRAL)
    prosodic = slice(_N_SPECTRAL, N_FEATURES - EMBEDDING_DIM)
    embedding = slice(N_FEATURES - EMBEDDING_DIM, N_FEATURES)


BLOCKS = Blocks()

# resemblyzer imports webrtcvad, which imports pkg_resources and warns about it on every start.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

_encoder_lock = threading.Lock()
_encoder: object | None = None


def _voice_encoder() -> object:
    """Load the Resemblyzer encoder once per process (weights ship inside the pip package)."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            from resemblyzer import VoiceEncoder

            _encoder = VoiceEncoder(device="cpu", verbose=False)
        return _encoder


def prepare(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz, finite, silence-trimmed, gain-normalised, padded to a minimum length."""
    samples = np.nan_to_num(np.asarray(audio, dtype=np.float32).reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0)
    if sample_rate != SAMPLE_RATE and samples.size:
        samples = librosa.resample(samples, orig_sr=sample_rate, target_sr=SAMPLE_RATE, res_type="soxr_hq")
    if samples.size and np.abs(samples).max() > 1e-4:
        # Corpus clips carry ~1 s of lead-in silence and VAD segments do not: trim both alike.
        trimmed, _ = librosa.effects.trim(samples, top_db=SPEECH_TOP_DB, frame_length=N_FFT, hop_length=HOP)
        samples = trimmed if trimmed.size >= MIN_SAMPLES else samples
    if samples.size < MIN_SAMPLES:
        samples = np.pad(samples, (0, MIN_SAMPLES - samples.size))
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    if rms > 1e-6:  # leave (near-)silence alone instead of amplifying noise to speech level
        samples = samples * np.float32(10.0 ** (TARGET_DBFS / 20.0) / rms)
    return samples.astype(np.float32)


def _speech_columns(level_db: np.ndarray) -> np.ndarray:
    keep = level_db > level_db.max() - SPEECH_TOP_DB
    return keep if keep.sum() >= 2 else np.ones_like(keep)


def _mean_std(matrix: np.ndarray) -> np.ndarray:
    return np.concatenate([matrix.mean(axis=1), matrix.std(axis=1)])


def _spectral_block(samples: np.ndarray) -> np.ndarray:
    power = np.abs(librosa.stft(samples, n_fft=N_FFT, hop_length=HOP)) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE, n_mels=40)
    log_mel = librosa.power_to_db(mel, top_db=80.0)
    level_db = 10.0 * np.log10(np.maximum(power.sum(axis=0), 1e-10))
    keep = _speech_columns(level_db)
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=N_MFCC)
    width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))
    if width >= 3:
        delta = librosa.feature.delta(mfcc, width=width)
        delta2 = librosa.feature.delta(mfcc, order=2, width=width)
    else:
        delta = delta2 = np.zeros_like(mfcc)
    magnitude = np.sqrt(power)
    tracks = np.vstack(
        [
            librosa.feature.spectral_centroid(S=magnitude, sr=SAMPLE_RATE) / 1000.0,
            librosa.feature.spectral_bandwidth(S=magnitude, sr=SAMPLE_RATE) / 1000.0,
            librosa.feature.spectral_rolloff(S=magnitude, sr=SAMPLE_RATE) / 1000.0,
            np.log10(librosa.feature.spectral_flatness(S=magnitude) + 1e-6),
            librosa.feature.spectral_contrast(S=magnitude, sr=SAMPLE_RATE, fmin=100.0),
            librosa.feature.zero_crossing_rate(samples, frame_length=N_FFT, hop_length=HOP)[
                :, : power.shape[1]
            ],
        ]
    )
    return np.concatenate(
        [
            _mean_std(mfcc[:, keep]),
            _mean_std(delta[:, keep]),
            _mean_std(delta2[:, keep]),
            _mean_std(tracks[:, keep]),
        ]
    )


def _prosodic_block(samples: np.ndarray) -> np.ndarray:
    tr = prosody.track(samples, SAMPLE_RATE)
    acoustics = prosody.measure(samples, SAMPLE_RATE)
    voiced = tr.f0_hz > 0
    n_speech = max(int(tr.speech.sum()), 1)
    f0_stats = [0.0] * 7
    if voiced.sum() >= 3:
        # Semitones relative to 100 Hz: a log scale, so "how animated" compares across voices.
        st = 12.0 * np.log2(tr.f0_hz[voiced] / 100.0)
        times = np.flatnonzero(voiced) * tr.hop_s
        slope = float(np.polyfit(times, st, 1)[0]) if np.ptp(times) > 0 else 0.0
        p10, p90 = np.percentile(st, [10, 90])
        f0_stats = [
            float(st.mean()),
            float(st.std()),
            float(p10),
            float(p90),
            float(p90 - p10),
            float(np.clip(slope, -50.0, 50.0)),
            float(np.abs(np.diff(st)).mean()) if st.size > 1 else 0.0,
        ]
    level = tr.level_db[tr.speech] if tr.speech.any() else tr.level_db
    level_stats = [
        float(level.std()),
        float(np.percentile(level, 95) - np.percentile(level, 5)),
        float(np.abs(np.diff(level)).mean()) if level.size > 1 else 0.0,
    ]
    return np.array(
        [
            *f0_stats,
            float(voiced.sum() / n_speech),
            *level_stats,
            float(acoustics.get("rate_per_s", 0.0)),
            float(1.0 - tr.speech.mean()) if tr.speech.size else 1.0,
        ]
    )


def _speaker_embeddings(clips: Sequence[np.ndarray]) -> np.ndarray:
    """Resemblyzer utterance embeddings, all partial windows of the batch in one LSTM pass."""
    import torch
    from resemblyzer import VoiceEncoder, audio

    encoder = _voice_encoder()
    assert isinstance(encoder, VoiceEncoder)
    windows: list[np.ndarray] = []
    owners: list[int] = []
    for index, samples in enumerate(clips):
        wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(
            samples.size, PARTIAL_RATE, PARTIAL_MIN_COVERAGE
        )
        needed = wav_slices[-1].stop
        padded = np.pad(samples, (0, max(0, needed - samples.size)))
        mel = audio.wav_to_mel_spectrogram(padded)
        for sl in mel_slices:
            windows.append(mel[sl])
            owners.append(index)
    with torch.inference_mode():
        partial = encoder(torch.from_numpy(np.stack(windows))).numpy()
    partial = np.nan_to_num(partial)
    owner_index = np.asarray(owners)
    out = np.zeros((len(clips), EMBEDDING_DIM), dtype=np.float64)
    for index in range(len(clips)):
        mean = partial[owner_index == index].mean(axis=0)
        out[index] = mean / max(float(np.linalg.norm(mean)), 1e-9)
    return out


def extract_batch(clips: Sequence[np.ndarray], sample_rate: int | Sequence[int]) -> np.ndarray:
    """Features of several clips, shape (len(clips), N_FEATURES), float64, always finite.

    `sample_rate` is one rate for all clips or one per clip.
    """
    if not clips:
        return np.zeros((0, N_FEATURES))
    rates = [sample_rate] * len(clips) if isinstance(sample_rate, int) else list(sample_rate)
    if len(rates) != len(clips):
        raise ValueError(f"{len(clips)} clips but {len(rates)} sample rates")
    prepared = [prepare(clip, rate) for clip, rate in zip(clips, rates, strict=True)]
    handcrafted = np.stack([np.concatenate([_spectral_block(s), _prosodic_block(s)]) for s in prepared])
    features = np.hstack([handcrafted, _speaker_embeddings(prepared)])
    return cast(np.ndarray, np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0))


def extract(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Features of one clip, shape (N_FEATURES,)."""
    return cast(np.ndarray, extract_batch([audio], sample_rate)[0])
