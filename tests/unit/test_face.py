"""Face-expression stage against real media: a public-domain photo, an mp4 made from it with ffmpeg."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from worker.pipeline.contracts import VideoFrame
from worker.pipeline.face.expression import (
    DEFAULT_WEIGHTS,
    FaceDetector,
    FaceExpressionModel,
    FrameError,
    load_model,
    sample_frames,
)
from worker.pipeline.labels import CANONICAL_LABELS

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "data" / "face_sample.jpg"
DEMO_AUDIO = ROOT / "callpulse" / "examples" / "demo_call.ogg"
# Hand-marked face in face_sample.jpg (eyebrows to chin, cheek to cheek), x, y, w, h.
TRUE_FACE = (115, 70, 90, 95)

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


def sample_rgb() -> np.ndarray:
    bgr = cv2.imread(str(SAMPLE))
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def model() -> FaceExpressionModel:
    return load_model()


@pytest.fixture(scope="module")
def face_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of the still photo with the demo call's audio, as H.264 (or MPEG-4 part 2) in mp4."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    vcodec = ["-c:v", "libx264", "-pix_fmt", "yuv420p"] if " libx264 " in encoders else ["-c:v", "mpeg4"]
    out = tmp_path_factory.mktemp("face") / "call.mp4"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-loop", "1", "-framerate", "10", "-i", str(SAMPLE),
           "-i", str(DEMO_AUDIO), "-t", "4", *vcodec, "-c:a", "aac", "-shortest", str(out)]
    subprocess.run(cmd, check=True, timeout=120)
    return out


def test_sample_photo_is_small_and_readable() -> None:
    assert SAMPLE.stat().st_size < 60_000
    assert sample_rgb().shape == (384, 320, 3)


def test_haar_detector_finds_the_face_in_the_photo() -> None:
    gray = cv2.cvtColor(sample_rgb(), cv2.COLOR_RGB2GRAY)
    box = FaceDetector().largest(gray)
    assert box is not None
    assert iou(box, TRUE_FACE) > 0.5


def test_model_scores_are_canonical_calibrated_probabilities(model: FaceExpressionModel) -> None:
    obs = model.analyze([VideoFrame(time_s=12.5, image=sample_rgb())])
    assert len(obs) == 1
    o = obs[0]
    assert o.time_s == 12.5
    assert set(o.scores) == set(CANONICAL_LABELS)
    assert sum(o.scores.values()) == pytest.approx(1.0, abs=1e-6)
    assert all(0.0 <= p <= 1.0 for p in o.scores.values())
    assert o.label == max(o.scores, key=o.scores.__getitem__)
    assert o.score == pytest.approx(o.scores[o.label])
    x, y, w, h = o.box
    assert x >= 0 and y >= 0 and x + w <= 320 and y + h <= 384 and w > 40 and h > 40
    assert iou(o.box, TRUE_FACE) > 0.5


def test_weights_metadata_matches_arrays(model: FaceExpressionModel) -> None:
    assert model.name == "face-fer"
    m = re.fullmatch(r"face-fer-v1\+([0-9a-f]{8})", model.version)
    assert m is not None
    digest = hashlib.sha256()
    with np.load(DEFAULT_WEIGHTS, allow_pickle=False) as arrays:
        for k in sorted(arrays.files):
            digest.update(k.encode())
            digest.update(np.ascontiguousarray(arrays[k]).tobytes())
    assert digest.hexdigest()[:8] == m.group(1)
    assert 0.2 < model.temperature < 10


def test_faceless_frames_are_omitted(model: FaceExpressionModel) -> None:
    gray = np.full((240, 320, 3), 128, dtype=np.uint8)
    assert model.analyze([VideoFrame(time_s=1.0, image=gray)]) == []
    face = sample_rgb()
    obs = model.analyze([VideoFrame(0.5, face), VideoFrame(1.0, gray), VideoFrame(1.5, face)])
    assert [o.time_s for o in obs] == [0.5, 1.5]
    # The same face in one batch gets the same answer wherever it sits in the batch.
    assert obs[0].scores == pytest.approx(obs[1].scores, abs=1e-5)


@needs_ffmpeg
def test_frames_from_a_real_video_are_inside_the_span(face_video: Path, model: FaceExpressionModel) -> None:
    frames = sample_frames(face_video, 1.0, 3.0, count=4)
    assert len(frames) == 4
    times = [f.time_s for f in frames]
    assert times == sorted(times) and all(1.0 <= t <= 3.0 for t in times)
    assert all(f.image.shape == (384, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    # Decoded video looks like the photo (H.264 loses a little), so RGB order is right.
    assert np.abs(frames[0].image.astype(int) - sample_rgb().astype(int)).mean() < 12
    obs = model.analyze(frames)
    assert len(obs) >= 3
    assert all(1.0 <= o.time_s <= 3.0 for o in obs)
    assert all(iou(o.box, TRUE_FACE) > 0.4 for o in obs)


@needs_ffmpeg
def test_each_frame_is_the_one_at_its_slice_centre(tmp_path: Path) -> None:
    """One ffmpeg run per segment must still land on the right moments: a clip whose brightness
    encodes its time (grey level 50·t at 10 fps) read back at the slice centres."""
    clip = tmp_path / "clock.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "nullsrc=s=32x32:r=10:d=5,geq=lum='50*T':cb=128:cr=128", "-c:v", "libx264",
                    "-qp", "0", "-pix_fmt", "yuv444p", str(clip)], check=True)
    frames = sample_frames(clip, 0.4, 4.4, count=4)  # centres 0.9, 1.9, 2.9, 3.9 s
    assert [f.time_s for f in frames] == pytest.approx([0.9, 1.9, 2.9, 3.9])
    # Luma 50·t read back as RGB through the video (limited) range: (Y − 16) · 255/219. One frame
    # (0.1 s) early or late would be 5.8 levels off.
    levels = [float(f.image.mean()) for f in frames]
    assert levels == pytest.approx([(50 * t - 16) * 255 / 219 for t in (0.9, 1.9, 2.9, 3.9)], abs=2.5)


@needs_ffmpeg
def test_frames_are_scaled_to_max_side(face_video: Path) -> None:
    frames = sample_frames(face_video, 0.0, 4.0, count=2, max_side=200)
    assert len(frames) == 2
    h, w, _ = frames[0].image.shape
    assert max(h, w) <= 200 and abs(w / h - 320 / 384) < 0.03


@needs_ffmpeg
def test_times_past_the_end_give_no_frame(face_video: Path) -> None:
    frames = sample_frames(face_video, 2.0, 20.0, count=4)  # slice centres 4.25, 8.75, ... are past 4 s
    assert frames == []


@needs_ffmpeg
def test_audio_only_media_gives_no_frames() -> None:
    assert sample_frames(DEMO_AUDIO, 0.0, 5.0) == []


@needs_ffmpeg
def test_corrupt_file_raises_frame_error(tmp_path: Path, face_video: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(FrameError):
        sample_frames(junk, 0.0, 2.0)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(FrameError):
        sample_frames(empty, 0.0, 2.0)
