"""Video stage: sample frames from a recording, find the largest face, classify its expression.

Faces are found with OpenCV's Haar cascade (ships inside opencv-python-headless, no download) and
classified by a small CNN trained on FER2013 48×48 grayscale faces (see face_training.py).
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import torch
from torch import nn

from worker.pipeline.contracts import VideoFrame
from worker.pipeline.labels import CANONICAL_LABELS
from worker.pipeline.media.decode import INPUT_GUARDS

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "face_expression.npz"
PROBE_TIMEOUT_S = 30
FRAME_TIMEOUT_S = 30
INPUT_SIZE = 48  # FER2013 resolution
CROP_SIZE = 44  # the net sees a centre 44×44 of the 48×48 face (training used random 44 crops)
WIDTHS = (16, 32, 64, 128)
# Haar's frontal-face box vs a FER2013 crop, measured by running this cascade on 1,500 FER2013
# training faces (upscaled ×4, edge-padded): 1,118 detections, Haar side / FER side median 0.974
# (IQR 0.91-1.03), centres offset < 0.5 % of the side. So FER crops are Haar-tight: enlarge by
# 1/0.974 and keep the centre (`python -m training.face ... --haar-geometry`).
HAAR_TO_FER_SCALE = 1.03
HAAR_TO_FER_SHIFT_Y = 0.0  # FER crop centre below the Haar centre, as a fraction of the crop side


class FrameError(ValueError):
    """The media's video could not be read (broken file, decoder failure, timeout)."""


@dataclass(frozen=True)
class FaceObservation:
    time_s: float
    box: tuple[int, int, int, int]  # x, y, w, h of the detected face in the frame's pixels
    label: str  # canonical label with the highest probability
    score: float  # probability of ``label``
    scores: dict[str, float]  # canonical label -> calibrated probability, sums to 1


# ---------------------------------------------------------------------------------------------
# Frame sampling


def _run(cmd: list[str], timeout_s: float, what: str) -> bytes:
    """stdout of an ffmpeg/ffprobe call; FrameError naming `what` on a timeout or a failure."""
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FrameError(f"{what} timed out") from exc
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise FrameError(f"{what} failed ({lines[-1] if lines else 'unknown'})")
    return proc.stdout


def _probe_video(media_path: Path) -> tuple[int, int] | None:
    """Displayed (width, height) of the first real video stream; None when there is none."""
    if shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg/ffprobe not found on PATH: install ffmpeg (apt-get install ffmpeg)")
    # The same demuxer and protocol allow-list as the audio probe: only the media itself is read.
    cmd = ["ffprobe", "-v", "error", *INPUT_GUARDS, "-print_format", "json", "-show_streams", str(media_path)]
    stdout = _run(cmd, PROBE_TIMEOUT_S, f"probing {media_path.name}")
    try:
        streams = json.loads(stdout or b"{}").get("streams", [])
    except ValueError as exc:
        raise FrameError(f"{media_path.name}: unreadable ffprobe output") from exc
    for s in streams:
        # Cover art in audio files is a "video" stream too; it is not the call's video.
        if s.get("codec_type") != "video" or s.get("disposition", {}).get("attached_pic"):
            continue
        width, height = int(s.get("width") or 0), int(s.get("height") or 0)
        if width <= 0 or height <= 0:
            raise FrameError(f"{media_path.name}: video stream without a frame size")
        # ffmpeg auto-rotates phone video, so a ±90° rotation swaps the frame we receive.
        rotation = 0.0
        for side in s.get("side_data_list", []) or []:
            if "rotation" in side:
                rotation = float(side["rotation"])
        rotation = float(s.get("tags", {}).get("rotate", rotation))
        if round(abs(rotation)) % 180 == 90:
            width, height = height, width
        return width, height
    return None


def sample_frames(
    media_path: Path, start_s: float, end_s: float, count: int = 4, max_side: int = 640
) -> list[VideoFrame]:
    """``count`` frames evenly spread inside [start_s, end_s] (centres of equal slices), RGB uint8.

    Returns [] for media without a video stream; raises FrameError for a broken file. Times past the
    end of the video simply yield no frame. One ffmpeg run per segment: it seeks to the first centre
    and keeps one frame per slice (the fps filter picks the frame nearest each centre), so r1-omni's
    8 frames cost one process, not eight.
    """
    media_path = Path(media_path)  # callers may hand over a str
    if count <= 0 or end_s < start_s:
        return []
    stat = media_path.stat()
    size = _probe_cached(str(media_path), stat.st_mtime_ns, stat.st_size)
    if size is None:
        return []
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    # Even sizes keep every pixel format happy; the frames we read back must match exactly.
    out_w, out_h = max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
    step = max((end_s - start_s) / count, 1e-3)
    first = start_s + 0.5 * step
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", *INPUT_GUARDS, "-ss", f"{max(first, 0.0):.3f}",
        "-i", str(media_path),
        "-map", "0:v:0", "-vf", f"fps={1.0 / step:.6f}:round=up,scale={out_w}:{out_h}",
        "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]
    stdout = _run(cmd, FRAME_TIMEOUT_S, f"reading {count} frames of {media_path.name} at {start_s:.2f} s")
    frame_bytes = out_w * out_h * 3
    frames = []
    for i in range(min(count, len(stdout) // frame_bytes)):
        image = np.frombuffer(stdout[i * frame_bytes: (i + 1) * frame_bytes], dtype=np.uint8)
        frames.append(VideoFrame(time_s=float(first + i * step), image=image.reshape(out_h, out_w, 3).copy()))
    return frames


@functools.lru_cache(maxsize=64)
def _probe_cached(media_path: str, mtime_ns: int, size: int) -> tuple[int, int] | None:
    """One ffprobe per media file (and version of it) per process, not one per segment."""
    return _probe_video(Path(media_path))


# ---------------------------------------------------------------------------------------------
# Expression classifier


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class FaceNet(nn.Module):
    """VGG-style CNN: 4 stages of two 3×3 conv+BN+ReLU, max-pool between, global average pool."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, n_classes: int = len(CANONICAL_LABELS)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += _block(c_in, w) + _block(w, w)
            c_in = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(c_in, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(self.features(x)))


def standardize(faces: np.ndarray) -> np.ndarray:
    """uint8 (N, 48, 48) faces -> float32 (N, 1, 44, 44) centre crops, each zero-mean unit-std.

    Per-face standardisation makes the net indifferent to camera exposure and contrast.
    """
    off = (INPUT_SIZE - CROP_SIZE) // 2
    x = faces[:, off:off + CROP_SIZE, off:off + CROP_SIZE].astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return cast(np.ndarray, ((x - mean) / np.maximum(std, 1.0))[:, None])


def tta_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean logits of each face and its mirror image, in one forward pass."""
    n = x.shape[0]
    both = torch.cat([x, torch.flip(x, dims=[3])]).contiguous(memory_format=torch.channels_last)
    out = net(both)
    return cast(torch.Tensor, (out[:n] + out[n:]) / 2)


def fer_crop(gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Cut a FER2013-like 48×48 crop around a Haar box (edges replicated when it leaves the frame)."""
    x, y, w, h = box
    side = max(w, h) * HAAR_TO_FER_SCALE
    cx = x + w / 2
    cy = y + h / 2 + HAAR_TO_FER_SHIFT_Y * side
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    s = max(1, round(side))
    pad = max(0, -x0, -y0, x0 + s - gray.shape[1], y0 + s - gray.shape[0])
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        x0, y0 = x0 + pad, y0 + pad
    crop = gray[y0:y0 + s, x0:x0 + s]
    interp = cv2.INTER_AREA if s > INPUT_SIZE else cv2.INTER_LINEAR
    return cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=interp)


class FaceDetector:
    """Largest frontal face per image with OpenCV's stock Haar cascade."""

    def __init__(self) -> None:
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV Haar cascade missing at {path}: need opencv-python-headless>=4.8,<5")

    def largest(self, gray: np.ndarray) -> tuple[int, int, int, int] | None:
        # Faces smaller than ~1/12 of the shorter side are too few pixels for a 48×48 classifier.
        min_side = max(24, min(gray.shape[:2]) // 12)
        found = self.cascade.detectMultiScale(
            cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
        )
        if len(found) == 0:
            return None
        x, y, w, h = max((tuple(int(v) for v in f) for f in found), key=lambda b: b[2] * b[3])
        return x, y, w, h


class FaceExpressionModel:
    name = "face-fer"

    def __init__(
        self, net: FaceNet, classes: list[str], temperature: float, version: str, device: str
    ) -> None:
        self.net = net.to(device).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.classes = classes
        self.temperature = temperature
        self.version = version
        self.device = device
        self.detector = FaceDetector()

    def analyze(self, frames: list[VideoFrame]) -> list[FaceObservation]:
        """One observation per frame that shows a face (the largest); faceless frames are omitted."""
        found: list[tuple[float, tuple[int, int, int, int]]] = []
        crops: list[np.ndarray] = []
        for frame in frames:
            image = np.asarray(frame.image)
            if image.ndim == 3 and image.shape[2] == 3:
                gray = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
            elif image.ndim == 2:
                gray = np.ascontiguousarray(image, dtype=np.uint8)
            else:
                raise ValueError(f"frame at {frame.time_s:.2f} s is not an H×W×3 RGB image: {image.shape}")
            box = self.detector.largest(gray)
            if box is None:
                continue
            found.append((frame.time_s, box))
            crops.append(fer_crop(gray, box))
        if not crops:
            return []
        probs = self.classify(np.stack(crops))
        out = []
        for (time_s, box), p in zip(found, probs, strict=True):
            scores = {label: float(v) for label, v in zip(self.classes, p, strict=True)}
            label = max(scores, key=scores.__getitem__)
            out.append(FaceObservation(time_s=float(time_s), box=box, label=label,
                                       score=scores[label], scores=scores))
        return out

    @torch.inference_mode()
    def classify(self, faces: np.ndarray) -> np.ndarray:
        """uint8 (N, 48, 48) FER-style faces -> (N, classes) calibrated probabilities, one forward pass."""
        x = torch.from_numpy(standardize(faces)).to(self.device)
        logits = tta_logits(self.net, x) / self.temperature
        probs = torch.softmax(logits.double(), dim=1).cpu().numpy()
        return cast(np.ndarray, probs / probs.sum(axis=1, keepdims=True))


def load_model(device: str = "cpu", weights_path: Path | None = None) -> FaceExpressionModel:
    path = Path(weights_path) if weights_path is not None else DEFAULT_WEIGHTS
    meta = json.loads(path.with_suffix(".json").read_text())
    classes = list(meta["classes"])
    if sorted(classes) != sorted(CANONICAL_LABELS):
        raise ValueError(f"{path.name}: classes {classes} are not the canonical labels")
    net = FaceNet(tuple(meta.get("widths", WIDTHS)), len(classes))
    with np.load(path, allow_pickle=False) as arrays:
        # Shipped as float16 to halve the file; compute in float32.
        state = {k: torch.from_numpy(arrays[k].astype(np.float32)) for k in arrays.files}
    net.load_state_dict(state, strict=False)
    needed = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    missing = needed - set(state)
    if missing:
        raise ValueError(f"{path.name}: weights lack {sorted(missing)[:3]}")
    temperature = float(meta.get("temperature", 1.0))
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{path.name}: bad temperature {temperature}")
    return FaceExpressionModel(net, classes, temperature, str(meta["version"]), device)
