"""Supervisor corrections as extra training rows for `callpulse train --corrections FILE.jsonl`.

Each line: {"media": path, "channel": int, "start_s": float, "end_s": float, "label": canonical
label, "speaker": str}. Spans are decoded with the pipeline's own decoder, labels mapped onto the
model's classes, and each span's speaker reference is built like production's: from up to 12
*other* corrected spans of the same speaker (a speaker with a single span feeds the plain head only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training import corpora, evaluation
from training.voice import SEED, Extra
from worker.pipeline import labels
from worker.pipeline.media.audio_store import slice_mono
from worker.pipeline.media.decode import MediaError, decode
from worker.pipeline.voice.embedded import features

# Canonical label -> the model's own class (the rest share their canonical name).
TO_MODEL_CLASS = {"fear": "fearful", "surprise": "surprised"}
MIN_SPAN_S = 0.3


def model_class(label: str) -> str | None:
    canonical = labels.canonical(str(label).strip().lower())
    if canonical is None:
        return None
    cls = TO_MODEL_CLASS.get(canonical, canonical)
    return cls if cls in corpora.RAW_CLASSES else None


def read(path: Path) -> list[dict[str, object]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            float(row["start_s"]), float(row["end_s"]), int(row["channel"]), str(row["media"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"{path}:{number}: not a correction line ({exc})") from exc
        rows.append(row)
    return rows


def load(path: Path, global_std: np.ndarray | None = None) -> Extra | None:
    """Features of the corrected spans (None when the file holds no usable correction)."""
    rows = read(path)
    audio: list[np.ndarray] = []
    targets: list[str] = []
    speakers: list[str] = []
    decoded: dict[str, object] = {}
    skipped = missing = 0
    for row in rows:
        cls = model_class(str(row.get("label", "")))
        start, end = float(row["start_s"]), float(row["end_s"])  # type: ignore[arg-type]
        if cls is None or end - start < MIN_SPAN_S:
            skipped += 1
            continue
        media = str(row["media"])
        if media not in decoded:
            try:
                decoded[media] = decode(Path(media), features.SAMPLE_RATE)
            except (OSError, MediaError):
                # A call deleted since it was corrected (retention, DELETE /v1/recordings/{id}):
                # its spans are skipped and counted, the rest still trains.
                decoded[media] = None
        recording = decoded[media]
        if recording is None:
            missing += 1
            continue
        channel = min(int(row["channel"]), recording.channels - 1)  # type: ignore[attr-defined, call-overload]
        audio.append(slice_mono(recording, channel, start, end))  # type: ignore[arg-type]
        targets.append(cls)
        speakers.append(f"{media}#{row.get('speaker', channel)}")
    print(f"corrections: {len(audio)} spans used, {skipped} skipped (unknown label or < {MIN_SPAN_S} s), "
          f"{missing} whose media is gone")
    if not audio:
        return None
    x = features.extract_batch(audio, features.SAMPLE_RATE)
    y = np.array(targets)
    refs = evaluation.build_references(x, np.array(speakers), SEED)
    usable = refs.n > 0
    spread = x.std(axis=0) if global_std is None else global_std
    normalised = evaluation.normalise(x[usable], refs.rows(usable), spread)
    return Extra(x=x, y=y, normalised=normalised, y_normalised=y[usable])
