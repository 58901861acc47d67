"""Raw audio of a live call: the declared formats decoded to the pipeline's 16 kHz, frames that are
not audio of that format told apart, and the call's samples kept on disk as they arrive.

Telephony sends 8 kHz μ-law or 16-bit PCM in small frames. Everything downstream (VAD, the emotion
models, the cache the infer stage slices) works on 16 kHz int16 per channel, so frames are decoded
and upsampled here, with filter state carried across frames so frame boundaries leave no clicks.
The call is appended to one interleaved int16 file: the infer stage memory-maps it while the call
is still running (`load_live`), and at the end it becomes an ordinary WAV recording."""

from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from worker.pipeline.contracts import DecodedAudio

LIVE_NAME = "live.s16"  # interleaved int16 16 kHz samples, appended as they arrive
LIVE_INFO = "live.json"  # {"channels": N}: what a reader needs to map the file
SAMPLE_RATE = 16_000
ENCODINGS = ("pcm_s16le", "mulaw")
SAMPLE_RATES = (8000, 16000)

# Signatures of files people send instead of raw samples (a whole WAV, MP3, Ogg, FLAC, WebM).
CONTAINER_MAGIC = (b"RIFF", b"ID3", b"OggS", b"fLaC", b"\x1a\x45\xdf\xa3")
# Full-scale white noise is what bytes of the wrong format (or no audio at all) decode to; speech
# and line noise never stay this loud and this flat over a frame.
NOISE_RMS = 0.3
NOISE_FLATNESS = 0.3
MIN_CHECK_SAMPLES = 160  # 10 ms at 16 kHz: shorter frames carry too little to judge


class BadFrame(ValueError):
    """A frame that is not audio of the declared format; the message says why."""


def _mulaw_table() -> np.ndarray:
    # G.711 μ-law expansion: bytes are stored inverted; sign, 3-bit exponent, 4-bit mantissa.
    codes = ~np.arange(256, dtype=np.uint8)
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent.astype(np.int32)
    value = magnitude - 0x84
    return np.where(sign != 0, -value, value).astype(np.int16)


MULAW = _mulaw_table()


@dataclass(frozen=True)
class Format:
    encoding: str
    sample_rate: int
    channels: int

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample on every channel."""
        return self.channels * (2 if self.encoding == "pcm_s16le" else 1)


def _low_pass_taps(n_taps: int = 63) -> np.ndarray:
    """Hamming-windowed sinc at half the band (4 kHz of the 16 kHz output), unit gain at DC: the
    filter scipy's firwin(63, 0.5) designs, computed here so the API process never imports scipy."""
    n = np.arange(n_taps) - (n_taps - 1) / 2
    taps = 0.5 * np.sinc(0.5 * n) * np.hamming(n_taps)
    return np.asarray(taps / taps.sum(), dtype=np.float64)


class Upsampler:
    """8 kHz → 16 kHz for one channel: zero stuffing and a windowed-sinc low-pass whose state (the
    last inputs) carries over from frame to frame."""

    TAPS = _low_pass_taps() * 2.0  # ×2 restores the level the zero stuffing halves

    def __init__(self) -> None:
        self.history = np.zeros(self.TAPS.size - 1, dtype=np.float64)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        stuffed = np.zeros(samples.size * 2, dtype=np.float64)
        stuffed[::2] = samples
        joined = np.concatenate([self.history, stuffed])
        out = np.convolve(joined, self.TAPS, mode="valid")
        self.history = joined[joined.size - self.history.size:]
        return np.asarray(out, dtype=np.float32)


class FrameDecoder:
    """Decodes one call's binary frames (interleaved samples of the declared format) into float32
    16 kHz samples per channel."""

    def __init__(self, fmt: Format) -> None:
        self.fmt = fmt
        self.upsamplers = [Upsampler() for _ in range(fmt.channels)] if fmt.sample_rate == 8000 else []

    def decode(self, frame: bytes) -> list[np.ndarray]:
        fmt = self.fmt
        if frame[:4] in CONTAINER_MAGIC or frame[4:8] == b"ftyp" or frame[:4].startswith(b"ID3"):
            raise BadFrame("the frame holds an audio file's header: send raw samples of the declared "
                           f"encoding ({fmt.encoding}), not a file")
        if len(frame) % fmt.frame_bytes:
            raise BadFrame(f"a frame of {len(frame)} bytes is not a whole number of {fmt.encoding} "
                           f"samples for {fmt.channels} channel(s) ({fmt.frame_bytes} bytes each)")
        if fmt.encoding == "pcm_s16le":
            ints = np.frombuffer(frame, dtype="<i2")
        else:
            ints = MULAW[np.frombuffer(frame, dtype=np.uint8)]
        samples = ints.astype(np.float32).reshape(-1, fmt.channels).T / 32768.0
        check_is_audio(samples, fmt.encoding)
        channels = [samples[c] for c in range(fmt.channels)]
        if self.upsamplers:
            channels = [up(ch) for up, ch in zip(self.upsamplers, channels, strict=True)]
        return channels


def decode_mulaw_track(payload: bytes, upsampler: Upsampler) -> np.ndarray:
    """One Twilio media payload (8 kHz μ-law of one track) → float32 16 kHz samples."""
    samples = MULAW[np.frombuffer(payload, dtype=np.uint8)].astype(np.float32) / 32768.0
    check_is_audio(samples[None, :], "mulaw")
    return upsampler(samples)


def check_is_audio(samples: np.ndarray, encoding: str) -> None:
    """Refuse frames that decode to loud white noise: random bytes, or samples of another
    encoding (PCM read as μ-law and the other way round both come out like this)."""
    for channel in samples:
        if channel.size < MIN_CHECK_SAMPLES:
            continue
        rms = float(np.sqrt(np.mean(channel.astype(np.float64) ** 2)))
        if rms < NOISE_RMS:
            continue
        power = np.abs(np.fft.rfft(channel.astype(np.float64))) ** 2 + 1e-12
        flatness = float(np.exp(np.mean(np.log(power))) / np.mean(power))
        if flatness > NOISE_FLATNESS:
            raise BadFrame(f"the frame decodes to full-scale noise, not {encoding} audio "
                           "(wrong encoding declared, or not audio at all)")


class LiveWriter:
    """Appends a call's 16 kHz audio to ``folder/live.s16``, interleaved. Channels may arrive
    unevenly (Twilio sends each track in its own messages): samples wait per channel until every
    channel has them, so the file stays aligned; `close` pads the shorter channels with silence."""

    def __init__(self, folder: Path, channels: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / LIVE_INFO).write_text(json.dumps({"channels": channels}))
        self.path = folder / LIVE_NAME
        self.channels = channels
        self.waiting: list[np.ndarray] = [np.zeros(0, dtype=np.int16) for _ in range(channels)]
        self.samples_written = 0
        self._file: BinaryIO = self.path.open("ab")

    def append(self, channel_samples: list[np.ndarray]) -> None:
        for c, samples in enumerate(channel_samples):
            if samples.size:
                pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
                self.waiting[c] = np.concatenate([self.waiting[c], pcm])
        self._write(min(w.size for w in self.waiting))

    def close(self) -> float:
        """Flush everything (shorter channels padded); returns the call's duration in seconds."""
        longest = max(w.size for w in self.waiting)
        self.waiting = [np.pad(w, (0, longest - w.size)) for w in self.waiting]
        self._write(longest)
        self._file.close()
        return self.samples_written / SAMPLE_RATE

    def _write(self, count: int) -> None:
        if count <= 0:
            return
        block = np.stack([w[:count] for w in self.waiting], axis=1)  # (count, channels): interleaved
        self._file.write(block.astype("<i2").tobytes())
        self._file.flush()  # the infer stage reads the file while the call goes on
        self.waiting = [w[count:] for w in self.waiting]
        self.samples_written += count


def load_live(folder: Path) -> DecodedAudio | None:
    """A live call's audio so far, memory-mapped (no copy): samples[channel, i] reads the
    interleaved file through a transposed view."""
    path, info = folder / LIVE_NAME, folder / LIVE_INFO
    if not path.exists() or not info.exists():
        return None
    channels = int(json.loads(info.read_text())["channels"])
    frames = path.stat().st_size // (2 * channels)
    if frames == 0:
        return DecodedAudio(samples=np.zeros((channels, 0), dtype=np.int16), sample_rate=SAMPLE_RATE,
                            duration_s=0.0)
    mapped = np.memmap(path, dtype="<i2", mode="r", shape=(frames, channels))
    return DecodedAudio(samples=mapped.T, sample_rate=SAMPLE_RATE, duration_s=frames / SAMPLE_RATE)


def write_wav(folder: Path, target: Path) -> None:
    """The finished call as a 16-bit PCM WAV (what the player and a rescore decode)."""
    audio = load_live(folder)
    channels = audio.channels if audio is not None else 1
    tmp = target.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        with (folder / LIVE_NAME).open("rb") as source:
            while chunk := source.read(1 << 20):
                out.writeframes(chunk)
    tmp.replace(target)


def remove_live(folder: Path) -> None:
    (folder / LIVE_NAME).unlink(missing_ok=True)
    (folder / LIVE_INFO).unlink(missing_ok=True)
