"""Stage 1: probe and decode media (pydub over ffmpeg) into 16 kHz float channels."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydub import AudioSegment
from pydub.exceptions import CouldntDecodeError

from worker.pipeline.contracts import DecodedAudio

# Containers we accept, as ffprobe names them (format_name is a comma list, e.g. "mov,mp4,m4a,3gp").
SUPPORTED_FORMATS = {"wav", "mp3", "mov", "mp4", "m4a", "aac", "ogg", "flac", "matroska", "webm", "opus"}
PROBE_TIMEOUT_S = 60
# Call recorders write 1 or 2 channels (some 4 for conferences); more is not a call recording, and
# every channel costs a VAD pass and memory.
MAX_CHANNELS = 8
DECODE_TIMEOUT_S = 1800


class MediaError(ValueError):
    """Media we cannot use; ``status_code`` is what the API answers (415 unsupported, 422 unusable)."""

    def __init__(self, reason: str, status_code: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    duration_s: float
    channels: int
    sample_rate: int
    audio_codec: str
    has_video: bool
    # The audio stream's own duration when the container states it (WebM/MKV often do not, and
    # their container duration may cover a longer video track).
    stream_duration_s: float = 0.0


def require_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise RuntimeError("ffmpeg/ffprobe not found on PATH: install ffmpeg (apt-get install ffmpeg)")


def probe(path: Path) -> MediaInfo:
    """Read container and stream facts with ffprobe, rejecting what cannot become call audio."""
    require_ffmpeg()
    if path.stat().st_size == 0:
        raise MediaError("the uploaded file is empty (0 bytes)", 422)
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MediaError("the media could not be probed within 60 s", 422) from exc
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        hint = detail[-1] if detail else "unknown error"
        raise MediaError(f"the file is not decodable audio or video ({_scrub(hint, path)})", 415)
    try:
        data = json.loads(proc.stdout or b"{}")
    except ValueError as exc:
        raise MediaError("the media could not be probed (unreadable ffprobe output)", 422) from exc
    fmt = data.get("format", {})
    format_name = str(fmt.get("format_name", ""))
    if not SUPPORTED_FORMATS.intersection(format_name.split(",")):
        raise MediaError(
            f"unsupported container '{format_name or 'unknown'}': send wav, mp3, m4a/aac, ogg/opus, "
            "flac, mp4 or webm",
            415,
        )
    streams = data.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [
        s for s in streams
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]
    if not audio:
        raise MediaError("the media has no audio track", 422)
    first = audio[0]
    channels = int(first.get("channels") or 1)
    if channels > MAX_CHANNELS:
        raise MediaError(f"the audio has {channels} channels; at most {MAX_CHANNELS} are supported", 422)
    stream_duration = _float(first.get("duration"))
    duration = stream_duration or _float(fmt.get("duration"))
    if "wav" in format_name.split(","):
        _check_wav_complete(path)
    return MediaInfo(
        format_name=format_name,
        duration_s=duration,
        channels=channels,
        sample_rate=int(_float(first.get("sample_rate"))),
        audio_codec=str(first.get("codec_name", "")),
        has_video=bool(video),
        stream_duration_s=stream_duration,
    )


def check_duration(info: MediaInfo, min_s: float, max_s: float) -> None:
    if info.duration_s and info.duration_s < min_s:
        raise MediaError(f"the recording is too short ({info.duration_s:.2f} s; at least {min_s:g} s)", 422)
    if info.duration_s > max_s:
        raise MediaError(f"the recording is too long ({info.duration_s:.0f} s; at most {max_s:g} s)", 422)


def decode(path: Path, sample_rate: int, info: MediaInfo | None = None) -> DecodedAudio:
    """Decode the first audio stream to float32 (channels, samples) at ``sample_rate``."""
    info = info or probe(path)
    fmt = "wav" if "wav" in info.format_name.split(",") else None
    try:
        audio = AudioSegment.from_file(str(path), format=fmt)
        if audio.frame_rate != sample_rate:
            audio = audio.set_frame_rate(sample_rate)
        audio = audio.set_sample_width(2)
    except (CouldntDecodeError, IndexError, ValueError, OSError) as exc:
        raise MediaError(f"the audio could not be decoded ({_scrub(str(exc), path)[:300]})", 422) from exc
    channels = audio.channels
    pcm = np.frombuffer(audio.raw_data, dtype=np.int16).reshape(-1, channels)
    # One float32 copy, scaled in place: a 6-hour stereo call is 2.8 GB as float32 already.
    samples = np.empty((channels, pcm.shape[0]), dtype=np.float32)
    samples[:] = pcm.T
    samples *= 1.0 / 32768.0
    del pcm, audio
    duration = samples.shape[1] / sample_rate
    if duration <= 0:
        raise MediaError("the audio track decodes to no samples", 422)
    # A file that decodes to much less than its audio stream declares was cut off in transfer.
    if info.stream_duration_s > 2.0 and duration < 0.9 * info.stream_duration_s:
        raise MediaError(
            f"the media is truncated: its header declares {info.stream_duration_s:.1f} s "
            f"but only {duration:.1f} s could be decoded",
            422,
        )
    return DecodedAudio(samples=samples, sample_rate=sample_rate,
                        duration_s=duration, has_video=info.has_video)


def _check_wav_complete(path: Path) -> None:
    """ffprobe measures a WAV by its size, so a cut-off upload looks valid; the header knows better."""
    with path.open("rb") as fh:
        header = fh.read(12)
        if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return  # RF64/other variants: leave them to the decoder
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return
            size = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                # 0 and 0xFFFFFFFF mark streamed WAVs whose writer never knew the length.
                if size in (0, 0xFFFFFFFF):
                    return
                available = path.stat().st_size - fh.tell()
                if available < size:
                    raise MediaError(
                        f"the WAV file is truncated: its header declares {size} bytes of audio "
                        f"but only {available} are present",
                        422,
                    )
                return
            fh.seek(size + (size & 1), 1)


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _scrub(message: str, path: Path) -> str:
    """Keep server paths out of error reasons shown to clients."""
    return message.replace(str(path), path.name).strip()
