"""Stage 1: probe media and decode it, bounded, into 16 kHz int16 channels on disk.

Compressed audio can expand enormously (a 212 KB Ogg/Opus file of 8 silent channels is minutes of
PCM; a 23 MB one is hours), so nothing here holds a whole call in memory: ffmpeg resamples to the
pipeline rate and writes 16-bit samples to a pipe, which is copied in fixed-size chunks into a
`.npy` file that the rest of the pipeline memory-maps. What a file may cost once decoded is checked
twice: from the probe's channels × duration (``check_budget``, a 413 at upload) and while decoding
(the byte count stops at the budget, whatever the header claimed). ffmpeg itself runs under an
address-space limit. Client-supplied names never choose a demuxer (an allow-list does), only local
files may be opened (no playlists reaching other paths), and ffprobe/ffmpeg messages go to the log,
never into a reason a client reads.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import struct
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worker.pipeline.contracts import DecodedAudio

log = logging.getLogger(__name__)

# Containers we accept, as ffprobe names them (format_name is a comma list, e.g. "mov,mp4,m4a,3gp").
SUPPORTED_FORMATS = {"wav", "mp3", "mov", "mp4", "m4a", "aac", "ogg", "flac", "matroska", "webm", "opus"}
# The only demuxers ffprobe/ffmpeg may pick, whatever the file's name says: no playlists (hls,
# concat) or image sequences that would open other files.
DEMUXERS = "wav,mp3,mov,aac,ogg,flac,matroska"
INPUT_GUARDS = ["-format_whitelist", DEMUXERS, "-protocol_whitelist", "file"]
SUPPORTED_HINT = "send wav, mp3, m4a/aac, ogg/opus, flac, mp4 or webm"
PROBE_TIMEOUT_S = 60
# Call recorders write 1 or 2 channels (some 4 for conferences); more is not a call recording, and
# every channel costs a VAD pass.
MAX_CHANNELS = 8
DECODE_TIMEOUT_S = 1800
BYTES_PER_SAMPLE = 2
CHUNK_BYTES = 1 << 20
# The cache's .npy header has a fixed size so it can be written once the sample count is known.
NPY_HEADER_BYTES = 128


class MediaError(ValueError):
    """Media we cannot use; ``status_code`` is what the API answers (413 too big once decoded,
    415 unsupported, 422 unusable)."""

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


@dataclass(frozen=True)
class DecodeLimits:
    """What one decode may cost: decoded bytes, seconds of audio, and ffmpeg's address space."""

    max_decoded_bytes: int = 2 * 1024**3
    max_duration_s: float = 6 * 3600.0
    memory_limit_bytes: int = 1024**3

    @classmethod
    def from_settings(cls, settings: Any) -> DecodeLimits:
        return cls(max_decoded_bytes=settings.max_decoded_bytes, max_duration_s=settings.max_duration_s,
                   memory_limit_bytes=settings.decode_memory_limit_bytes)


def require_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise RuntimeError("ffmpeg/ffprobe not found on PATH: install ffmpeg (apt-get install ffmpeg)")


def probe(path: Path) -> MediaInfo:
    """Read container and stream facts with ffprobe, rejecting what cannot become call audio."""
    require_ffmpeg()
    if path.stat().st_size == 0:
        raise MediaError("the uploaded file is empty (0 bytes)", 422)
    cmd = ["ffprobe", "-v", "error", *INPUT_GUARDS, "-print_format", "json", "-show_format",
           "-show_streams", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MediaError("the media could not be probed within 60 s", 422) from exc
    if proc.returncode != 0:
        # ffprobe's message may name paths the file pointed at (whether they exist is none of the
        # client's business): it goes to the log only.
        log.info("ffprobe refused %s: %s", path.name, _tail(proc.stderr))
        raise MediaError(f"the file is not decodable audio or video in a supported format: {SUPPORTED_HINT}",
                         415)
    try:
        data = json.loads(proc.stdout or b"{}")
    except ValueError as exc:
        raise MediaError("the media could not be probed (unreadable ffprobe output)", 422) from exc
    fmt = data.get("format", {})
    format_name = str(fmt.get("format_name", ""))
    if not SUPPORTED_FORMATS.intersection(format_name.split(",")):
        raise MediaError(f"unsupported container '{format_name or 'unknown'}': {SUPPORTED_HINT}", 415)
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


def decoded_bytes(info: MediaInfo, sample_rate: int) -> int:
    """What the probe says the file costs at the pipeline rate: channels × seconds × rate × 2."""
    return int(info.channels * info.duration_s * sample_rate * BYTES_PER_SAMPLE)


def check_budget(info: MediaInfo, sample_rate: int, max_decoded_bytes: int) -> None:
    need = decoded_bytes(info, sample_rate)
    if need > max_decoded_bytes:
        raise MediaError(
            f"the audio is too large once decoded: {info.channels} channel(s) × {info.duration_s:.0f} s "
            f"is {need / 1e9:.2f} GB of 16-bit samples at {sample_rate} Hz; this server accepts at most "
            f"{max_decoded_bytes / 1e9:.2f} GB (fewer channels or a shorter recording fit)",
            413,
        )


def decode_to_file(path: Path, target: Path, sample_rate: int, info: MediaInfo | None = None,
                   limits: DecodeLimits | None = None) -> DecodedAudio:
    """Decode the first audio stream into ``target`` (int16 .npy, shape (channels, samples)) and
    return it memory-mapped. Memory stays at one chunk whatever the file's length; a file that
    decodes past the limits, or a decoder that fails, raises MediaError with a reason."""
    info = info or probe(path)
    limits = limits or DecodeLimits()
    channels = info.channels
    frame = channels * BYTES_PER_SAMPLE
    # Whatever the header claims, decoding stops at the budget and at the longest call accepted.
    cap = min(limits.max_decoded_bytes,
              int((limits.max_duration_s * 1.02 + 1.0) * sample_rate) * frame)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A unique temp name: two runs of the same stage (a redelivered message) must not share one.
    tmp = target.with_name(f"{target.stem}.{uuid.uuid4().hex[:8]}.tmp.npy")
    try:
        written = _run_decoder(path, tmp, channels, sample_rate, cap, limits.memory_limit_bytes)
        samples = written // frame
        with tmp.open("r+b") as fh:
            fh.write(_npy_header(channels, samples))
            fh.truncate(NPY_HEADER_BYTES + samples * frame)
        duration = samples / sample_rate
        if duration <= 0:
            raise MediaError("the audio track decodes to no samples", 422)
        # A file that decodes to much less than its audio stream declares was cut off in transfer.
        if info.stream_duration_s > 2.0 and duration < 0.9 * info.stream_duration_s:
            raise MediaError(
                f"the media is truncated: its header declares {info.stream_duration_s:.1f} s "
                f"but only {duration:.1f} s could be decoded",
                422,
            )
        tmp.replace(target)  # atomic: a reader never sees half a file
    finally:
        tmp.unlink(missing_ok=True)
    pcm = np.load(target, mmap_mode="r", allow_pickle=False)
    return DecodedAudio(samples=pcm, sample_rate=sample_rate, duration_s=duration, has_video=info.has_video)


def decode(path: Path, sample_rate: int, info: MediaInfo | None = None,
           limits: DecodeLimits | None = None) -> DecodedAudio:
    """Short media into memory as float32 in [-1, 1] (tests, benches, training spans); the worker
    uses ``decode_to_file`` and never holds a float copy of a call."""
    with tempfile.TemporaryDirectory(prefix="callpulse-decode-") as folder:
        audio = decode_to_file(path, Path(folder) / "audio.npy", sample_rate, info, limits)
        samples = np.asarray(audio.samples, dtype=np.float32) * np.float32(1.0 / 32768.0)
    return DecodedAudio(samples=samples, sample_rate=sample_rate, duration_s=audio.duration_s,
                        has_video=audio.has_video)


def _run_decoder(path: Path, out: Path, channels: int, sample_rate: int, cap: int, memory_limit: int) -> int:
    """Stream ffmpeg's interleaved s16le output into ``out`` after a header-sized gap; returns the
    bytes written. Interleaved samples are exactly a Fortran-ordered (channels, samples) array."""
    require_ffmpeg()
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-v", "error", *INPUT_GUARDS,
           "-i", str(path), "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", str(channels),
           "-ar", str(sample_rate), "-acodec", "pcm_s16le", "-f", "s16le", "pipe:1"]
    frame = channels * BYTES_PER_SAMPLE
    with tempfile.TemporaryFile() as errors, out.open("wb") as sink:
        sink.write(b"\0" * NPY_HEADER_BYTES)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors,
                                preexec_fn=_address_space_limit(memory_limit))
        timer = threading.Timer(DECODE_TIMEOUT_S, proc.kill)
        timer.start()
        written = 0
        over = False
        try:
            assert proc.stdout is not None
            buffer = bytearray(CHUNK_BYTES - CHUNK_BYTES % frame)
            view = memoryview(buffer)
            while True:
                n = proc.stdout.readinto(buffer)  # type: ignore[attr-defined]
                if not n:
                    break
                if written + n > cap:
                    over = True
                    proc.kill()
                    break
                sink.write(view[:n])
                written += n
            proc.stdout.close()
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if over:
            raise MediaError(
                f"the audio decodes to more than this server accepts ({cap / 1e9:.2f} GB of 16-bit "
                f"samples at {sample_rate} Hz, {cap / frame / sample_rate:.0f} s of "
                f"{channels} channel(s)); its header understated its length",
                413,
            )
        if rc != 0:
            errors.seek(0)
            log.warning("ffmpeg failed on %s (exit %s): %s", path.name, rc, _tail(errors.read()))
            raise MediaError("the audio could not be decoded (the decoder failed on this file: it is "
                             "damaged, needs more memory than allowed or took longer than allowed)", 422)
    return written


def _address_space_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def _npy_header(channels: int, samples: int) -> bytes:
    """A version 1.0 .npy header of exactly NPY_HEADER_BYTES for int16 (channels, samples) in
    Fortran order, the layout ffmpeg's interleaved output already has."""
    text = f"{{'descr': '<i2', 'fortran_order': True, 'shape': ({channels}, {samples}), }}"
    length = NPY_HEADER_BYTES - 10
    body = text.ljust(length - 1).encode("latin1") + b"\n"
    assert len(body) == length, "the cache header outgrew its fixed size"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", length) + body


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


def _tail(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:300] if lines else "no message"
