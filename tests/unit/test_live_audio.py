"""Live-call building blocks without servers: the streaming VAD finds the batch path's segments on
real speech, μ-law and the 8 → 16 kHz upsampler decode frame by frame exactly as in one piece, and
frames that are not audio of the declared format are refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest

from tests.live_support import pcm16
from tests.support import EXAMPLE
from worker.pipeline.contracts import DecodedAudio
from worker.pipeline.media import live_audio
from worker.pipeline.speech import vad as segment
from worker.pipeline.speech.stream_vad import StreamSegmenter, VadNet


@pytest.fixture(scope="module")
def call_pcm() -> np.ndarray:
    return pcm16(EXAMPLE)


def test_streaming_vad_finds_the_batch_segments(call_pcm: np.ndarray) -> None:
    config = segment.SegmentationConfig()
    audio = DecodedAudio(samples=call_pcm.T.astype(np.float32) / 32768.0, sample_rate=16000,
                         duration_s=call_pcm.shape[0] / 16000)
    batch = [(s.channel, s.start_s, s.end_s)
             for s in segment.run(segment.load_model(), audio, {0: "agent", 1: "customer"}, config)]
    assert len(batch) >= 4

    segmenter = StreamSegmenter(VadNet(), 2, config)
    decoder = live_audio.FrameDecoder(live_audio.Format("pcm_s16le", 16000, 2))
    closed, released_at = [], []
    for i in range(0, call_pcm.shape[0], 1600):  # 100 ms frames
        for seg in segmenter.feed(decoder.decode(call_pcm[i: i + 1600].tobytes())):
            closed.append((seg.channel, seg.start_s, seg.end_s))
            released_at.append((i + 1600) / 16000 - seg.end_s)
    closed += [(s.channel, s.start_s, s.end_s) for s in segmenter.finish()]

    assert len(closed) == len(batch)
    for (ch, a, b), (bch, ba, bb) in zip(sorted(closed, key=lambda s: s[1]), batch, strict=True):
        assert ch == bch and abs(a - ba) <= 0.05 and abs(b - bb) <= 0.05
    # Segments are released while the call goes on, about merge_gap_s after the turn ends.
    assert released_at and max(released_at) < 1.5


def test_mulaw_table_matches_g711() -> None:
    # Known G.711 μ-law codes: 0xFF and 0x7F are zero, 0x00 / 0x80 the extremes.
    assert live_audio.MULAW[0xFF] == 0 and live_audio.MULAW[0x7F] == 0
    assert live_audio.MULAW[0x00] == -32124 and live_audio.MULAW[0x80] == 32124
    assert np.all(np.diff(live_audio.MULAW[0x80:0xFF].astype(int)) < 0)  # monotonic per sign


def test_upsampler_is_the_same_in_frames_as_in_one_piece(call_pcm: np.ndarray) -> None:
    x = call_pcm[:8000, 1].astype(np.float32) / 32768.0
    whole = live_audio.Upsampler()(x)
    up = live_audio.Upsampler()
    pieces = np.concatenate([up(x[i: i + 160]) for i in range(0, x.size, 160)])
    assert whole.size == 2 * x.size
    np.testing.assert_allclose(pieces, whole, atol=1e-6)
    # A 440 Hz tone keeps its level through the filter (no loss, no images).
    t = np.arange(8000) / 8000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = live_audio.Upsampler()(tone)[200:]
    assert abs(np.sqrt(np.mean(out ** 2)) - 0.5 / np.sqrt(2)) < 0.01


@pytest.mark.parametrize(("fmt", "frame", "why"), [
    (("pcm_s16le", 16000, 2), b"\x01\x02\x03", "not a whole number"),
    (("pcm_s16le", 16000, 1), b"RIFF" + bytes(60), "audio file's header"),
    (("pcm_s16le", 16000, 1), np.random.default_rng(1).integers(-32768, 32767, 3200).astype("<i2").tobytes(),
     "full-scale noise"),
    (("mulaw", 8000, 1), np.random.default_rng(2).integers(0, 256, 1600).astype(np.uint8).tobytes(),
     "full-scale noise"),
])
def test_frames_that_are_not_declared_audio_are_refused(fmt: tuple[str, int, int], frame: bytes,
                                                       why: str) -> None:
    decoder = live_audio.FrameDecoder(live_audio.Format(*fmt))
    with pytest.raises(live_audio.BadFrame, match=why):
        decoder.decode(frame)


def test_real_speech_in_either_format_is_accepted(call_pcm: np.ndarray) -> None:
    pcm_decoder = live_audio.FrameDecoder(live_audio.Format("pcm_s16le", 16000, 2))
    for i in range(0, call_pcm.shape[0], 16000):
        pcm_decoder.decode(call_pcm[i: i + 16000].tobytes())
    # The same speech as 8 kHz μ-law (ffmpeg's encoder), one channel.
    import subprocess

    mulaw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(EXAMPLE), "-ac", "1", "-ar", "8000",
                            "-f", "mulaw", "-"], check=True, capture_output=True).stdout
    decoder = live_audio.FrameDecoder(live_audio.Format("mulaw", 8000, 1))
    out = [decoder.decode(mulaw[i: i + 160])[0] for i in range(0, len(mulaw), 160)]
    assert sum(o.size for o in out) == 2 * len(mulaw)
