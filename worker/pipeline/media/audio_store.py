"""Where media and the decoded 16 kHz cache live on disk (a volume shared by api and workers)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from worker.pipeline.contracts import DecodedAudio
from worker.pipeline.media import live_audio

CACHE_NAME = "audio16k.npy"


def recording_dir(media_root: Path, tenant_id: uuid.UUID, recording_id: uuid.UUID) -> Path:
    return media_root / str(tenant_id) / str(recording_id)


def media_path(media_root: Path, tenant_id: uuid.UUID, recording_id: uuid.UUID, suffix: str) -> Path:
    # The original name never becomes a path: only its (sanitised) extension survives.
    clean = "".join(ch for ch in suffix.lower() if ch.isalnum())[:8]
    return recording_dir(media_root, tenant_id, recording_id) / f"original.{clean or 'bin'}"


def cache_path(media_root: Path, tenant_id: uuid.UUID, recording_id: uuid.UUID) -> Path:
    return recording_dir(media_root, tenant_id, recording_id) / CACHE_NAME


def load_decoded(target: Path, sample_rate: int) -> DecodedAudio | None:
    if not target.exists():
        return None
    pcm = np.load(target, mmap_mode="r", allow_pickle=False)
    return DecodedAudio(samples=pcm, sample_rate=sample_rate, duration_s=pcm.shape[1] / sample_rate)


def load_or_decode(cache: Path, media_uri: str, sample_rate: int, limits: Any = None) -> DecodedAudio:
    """The recording's decoded cache, or, when it is gone (another host, a cleaned disk), the media
    decoded again into it (bounded like the first decode), rather than failing the recording."""
    from worker.pipeline.media import decode

    audio = load_decoded(cache, sample_rate)
    if audio is None:
        # A live call (still streaming, or finished but not yet done) is read where it is written.
        audio = live_audio.load_live(cache.parent)
        if audio is not None:
            return audio
        if limits is None:
            from callpulse.settings import get_settings

            limits = decode.DecodeLimits.from_settings(get_settings())
        audio = decode.decode_to_file(Path(media_uri), cache, sample_rate, limits=limits)
    return audio


def slice_mono(audio: DecodedAudio, channel: int, start_s: float, end_s: float) -> np.ndarray:
    sr = audio.sample_rate
    raw = audio.samples[channel, int(start_s * sr): int(end_s * sr)]
    if raw.dtype == np.int16:
        return raw.astype(np.float32) / 32768.0
    return np.asarray(raw, dtype=np.float32)


def drop_cache(target: Path) -> None:
    """The cache is only needed until inference is done (a 30-min stereo call is ~115 MB); so is a
    live call's growing sample file, which its WAV replaces."""
    target.unlink(missing_ok=True)
    live_audio.remove_live(target.parent)


def remove_recording_files(media_root: Path, tenant_id: uuid.UUID, recording_id: uuid.UUID) -> None:
    """Delete the recording's folder (media + cache); a missing folder is already the goal."""
    remove_dir(recording_dir(media_root, tenant_id, recording_id))


def remove_dir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
