"""Training corpora of the embedded model: file lists, labels, augmentation and a feature cache.

Only RAVDESS (speech part) and EmoDB are used for training. EMOVO, URDU and TurEV-DB are
reserved for independent evaluation: `check_trainable` refuses them, and their file lists live in
`independent.py`, which the training loader never imports.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
from scipy.signal import butter, sosfilt

from worker.pipeline.voice.embedded import features

# The model's own vocabulary: RAVDESS's eight plus EmoDB's boredom (shared emotions merged).
RAW_CLASSES: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "boredom",
)
RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
EMODB_EMOTIONS = {
    "W": "angry",
    "L": "boredom",
    "E": "disgust",
    "A": "fearful",
    "F": "happy",
    "T": "sad",
    "N": "neutral",
}
RAVDESS_CLASSES: tuple[str, ...] = tuple(RAVDESS_EMOTIONS.values())
EMODB_CLASSES: tuple[str, ...] = tuple(c for c in RAW_CLASSES if c in EMODB_EMOTIONS.values())
# Corpora kept for independent evaluation only: never trained, tuned or selected on.
RESERVED_CORPORA = frozenset({"emovo", "urdu", "turev"})
RAVDESS_NAME = re.compile(r"^03-01-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.wav$")
EMODB_NAME = re.compile(r"^(\d\d)[a-z]\d\d([WLEAFTN])[a-z]\.wav$")


@dataclass(frozen=True)
class Clip:
    path: Path
    corpus: str  # "ravdess" | "emodb" | "corrections" (| reserved ones, evaluation only)
    speaker: str  # "ravdess-07", "emodb-03"
    label: str  # one of RAW_CLASSES

    @property
    def speaker_number(self) -> int:
        return int(self.speaker.rsplit("-", 1)[1])

    @property
    def key(self) -> str:
        """Cache key: folder + file name (some corpora reuse a file name across emotion folders)."""
        return f"{self.path.parent.name}/{self.path.name}"


def check_trainable(clips: Iterable[Clip]) -> None:
    """Refuse the corpora reserved for independent evaluation."""
    reserved = sorted({c.corpus for c in clips} & RESERVED_CORPORA)
    if reserved:
        raise ValueError(f"corpora {reserved} are reserved for independent evaluation: never trained on")


def list_ravdess(root: Path) -> list[Clip]:
    clips = []
    for path in sorted(root.glob("Actor_*/*.wav")):
        match = RAVDESS_NAME.match(path.name)
        if match:  # 03 = audio-only, 01 = speech; song files do not match
            clips.append(Clip(path, "ravdess", f"ravdess-{match.group(5)}", RAVDESS_EMOTIONS[match.group(1)]))
    return clips


def list_emodb(root: Path) -> list[Clip]:
    clips = []
    for path in sorted(root.glob("*.wav")):
        match = EMODB_NAME.match(path.name)
        if match:
            clips.append(Clip(path, "emodb", f"emodb-{match.group(1)}", EMODB_EMOTIONS[match.group(2)]))
    return clips


# ---- augmentation (training speakers only) ------------------------------------------------------


def _seed(clip: Clip, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{clip.key}:{name}".encode()).digest()[:4], "little")


def _noise(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White-ish noise at 15-30 dB SNR: line and room noise of real calls."""
    snr_db = rng.uniform(15.0, 30.0)
    power = float(np.mean(samples**2)) or 1e-8
    return samples + rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), samples.size).astype(np.float32)


def _telephone(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """300-3400 Hz band through an 8 kHz round trip, like a narrowband phone line."""
    sos = butter(4, [300.0, 3400.0], btype="bandpass", fs=features.SAMPLE_RATE, output="sos")
    band = sosfilt(sos, samples).astype(np.float32)
    narrow = librosa.resample(band, orig_sr=features.SAMPLE_RATE, target_sr=8000, res_type="soxr_hq")
    return librosa.resample(narrow, orig_sr=8000, target_sr=features.SAMPLE_RATE, res_type="soxr_hq")


def _mulaw(samples: np.ndarray) -> np.ndarray:
    """G.711-style 8-bit mu-law quantisation round trip (the classic narrowband phone codec)."""
    peak = float(np.abs(samples).max()) or 1.0
    x = np.clip(samples / peak, -1.0, 1.0)
    mu = 255.0
    coded = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * 127.0) / 127.0
    return (np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu * peak).astype(np.float32)


def _codec(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Narrowband line + mu-law codec + 20-35 dB line noise: a cheap stand-in for a real phone call."""
    narrow = _telephone(samples, rng)
    level = float(np.abs(narrow).max()) or 1.0
    coded = _mulaw(narrow / level * rng.uniform(0.3, 0.9)) * (level / 0.6)
    snr_db = rng.uniform(20.0, 35.0)
    power = float(np.mean(coded**2)) or 1e-8
    noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), coded.size)
    sos = butter(4, [300.0, 3400.0], btype="bandpass", fs=features.SAMPLE_RATE, output="sos")
    return (coded + sosfilt(sos, noise)).astype(np.float32)


def _pitch(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """±1-2 semitones: other voices, same emotion."""
    steps = float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0))
    return librosa.effects.pitch_shift(samples, sr=features.SAMPLE_RATE, n_steps=steps)


def _tempo(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """±8-12% speaking rate without changing pitch."""
    rate = float(rng.choice([0.9, 1.1]) * rng.uniform(0.98, 1.02))
    return librosa.effects.time_stretch(samples, rate=rate)


AUGMENTATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "noise": _noise,
    "telephone": _telephone,
    "codec": _codec,
    "pitch": _pitch,
    "tempo": _tempo,
}


def load_audio(clip: Clip, augmentation: str = "none") -> np.ndarray:
    samples, _ = librosa.load(clip.path, sr=features.SAMPLE_RATE, mono=True, res_type="soxr_hq")
    if augmentation != "none":
        rng = np.random.default_rng(_seed(clip, augmentation))
        samples = AUGMENTATIONS[augmentation](samples.astype(np.float32), rng)
    return samples.astype(np.float32)


# ---- feature cache ---------------------------------------------------------------------------------


def _cache_file(cache_dir: Path, corpus: str, augmentation: str) -> Path:
    return cache_dir / features.FEATURE_SPEC / f"{corpus}-{augmentation}-v2.npz"


def cached_features(
    clips: Iterable[Clip],
    augmentation: str,
    cache_dir: Path,
    batch_size: int = 32,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """Features of the clips (rows in the given order), computing and caching what is missing.

    One cache file per (corpus, augmentation), keyed by `Clip.key`, so re-runs are instant and a
    new feature spec never reads stale numbers.
    """
    clips = list(clips)
    out = np.zeros((len(clips), features.N_FEATURES))
    for corpus in sorted({c.corpus for c in clips}):
        path = _cache_file(cache_dir, corpus, augmentation)
        known: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                known = dict(zip(data["names"].tolist(), data["features"], strict=True))
        rows = [i for i, c in enumerate(clips) if c.corpus == corpus]
        missing = [i for i in rows if clips[i].key not in known]
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            audio = [load_audio(clips[i], augmentation) for i in chunk]
            for i, vector in zip(chunk, features.extract_batch(audio, features.SAMPLE_RATE), strict=True):
                known[clips[i].key] = vector
            log(f"  features {corpus}/{augmentation}: {min(start + batch_size, len(missing))}/{len(missing)}")
        if missing:
            path.parent.mkdir(parents=True, exist_ok=True)
            names = sorted(known)
            np.savez(path, names=np.array(names), features=np.stack([known[n] for n in names]))
        for i in rows:
            out[i] = known[clips[i].key]
    return out
