"""Labelled audio for `callpulse adapt`: a contact center's LABELS.csv or a tenant's stored corrections.

Both become the same list of `LabeledSpan`s, so the CLI on a CSV and `callpulse train --tenant` run
one adaptation code path. Problems a person can fix (an unknown label, a span past the end of its
file, a missing file) are refused with the line they are on, before any feature is extracted: a
model silently trained on half of someone's labels is worse than no model.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.pipeline import labels
from worker.pipeline.contracts import DecodedAudio
from worker.pipeline.media.audio_store import slice_mono
from worker.pipeline.media.decode import MediaError, decode
from worker.pipeline.voice.embedded import features

# Canonical label -> the embedded model's own class where the names differ.
TO_MODEL_CLASS = {"fear": "fearful", "surprise": "surprised"}
MIN_SPAN_S = 0.3
REQUIRED_COLUMNS = ("file", "label")


class LabelsError(ValueError):
    """The labels cannot be used as given; the message says where and why."""


@dataclass(frozen=True)
class LabeledSpan:
    media: Path
    label: str  # one of the model's classes
    start_s: float | None = None  # None: from the start of the file
    end_s: float | None = None  # None: to its end
    channel: int = 0
    group: str = ""  # speaker (or file): folds and speaker references never split one
    where: str = ""  # "LABELS.csv:12", for messages


def model_class(label: str, classes: Sequence[str]) -> str | None:
    """The model's class for a label: its own class names (calm, boredom, fearful, ...) as they
    are, otherwise the canonical label or a synonym of it; None when the model has no such class."""
    key = str(label).strip().lower()
    if key in classes:
        return key
    canonical = labels.canonical(key)
    if canonical is None:
        return None
    cls = TO_MODEL_CLASS.get(canonical, canonical)
    return cls if cls in classes else None


def _float_or_none(value: str | None, where: str, column: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise LabelsError(f"{where}: {column} {value!r} is not a number of seconds") from None
    if not np.isfinite(number) or number < 0:
        raise LabelsError(f"{where}: {column} {value!r} must be a time in seconds >= 0")
    return number


def read_csv(path: Path, classes: Sequence[str]) -> list[LabeledSpan]:
    """LABELS.csv: header with `file,label` and optionally `start_s,end_s` (and `speaker`, `channel`);
    file paths relative to the CSV. Every unknown label is listed in one error."""
    if not path.is_file():
        raise LabelsError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise LabelsError(f"{path}: the header must name the columns file,label (optionally "
                              f"start_s,end_s); missing: {', '.join(missing)}")
        reader.fieldnames = header
        rows = list(reader)
    spans, unknown = [], []
    for number, row in enumerate(rows, start=2):
        where = f"{path.name}:{number}"
        name, raw_label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
        if not name and not raw_label:
            continue
        cls = model_class(raw_label, classes)
        if cls is None:
            unknown.append(f"{where} {raw_label!r}")
            continue
        start = _float_or_none(row.get("start_s"), where, "start_s")
        end = _float_or_none(row.get("end_s"), where, "end_s")
        if start is not None and end is not None and end - start < MIN_SPAN_S:
            raise LabelsError(f"{where}: the span {start:g}-{end:g} s is shorter than {MIN_SPAN_S} s")
        media = (path.parent / name).resolve()
        if not media.is_file():
            raise LabelsError(f"{where}: no such file {name!r} (paths are relative to {path.parent})")
        channel = int(_float_or_none(row.get("channel"), where, "channel") or 0)
        speaker = (row.get("speaker") or "").strip()
        spans.append(LabeledSpan(media, cls, start, end, channel, speaker or str(media), where))
    if unknown:
        known = sorted(set(labels.CANONICAL_LABELS) | set(classes))
        raise LabelsError(f"unknown label(s): {'; '.join(unknown[:20])}"
                          f"{' …' if len(unknown) > 20 else ''}. Known labels: {', '.join(known)} "
                          f"(and their synonyms, e.g. anger, joy, frustrated)")
    if not spans:
        raise LabelsError(f"{path}: no labelled rows")
    return spans


def extract(spans: Sequence[LabeledSpan], *, strict: bool = True,
            log: Callable[[str], None] = print) -> tuple[np.ndarray, list[int]]:
    """Features of every span (rows in order) and the indices of the spans used. With `strict`, a
    span past the end of its file or an undecodable file is refused; otherwise (stored corrections
    whose call has since been deleted) it is skipped and counted."""
    audio, used = clips(spans, strict=strict, log=log)
    if not audio:
        return np.zeros((0, features.N_FEATURES)), []
    log(f"extracting features of {len(audio)} span(s)")
    matrix = np.vstack([features.extract_batch(audio[i : i + 32], features.SAMPLE_RATE)
                        for i in range(0, len(audio), 32)])
    return matrix, used


def clips(spans: Sequence[LabeledSpan], *, strict: bool = True,
          log: Callable[[str], None] = print) -> tuple[list[np.ndarray], list[int]]:
    """The audio of every usable span (mono float32 at 16 kHz) and the indices of the spans used;
    refusals and skips as in `extract`."""
    decoded: dict[Path, DecodedAudio | None] = {}
    audio, used = [], []
    gone = 0
    for index, span in enumerate(spans):
        if span.media not in decoded:
            try:
                decoded[span.media] = decode(span.media, features.SAMPLE_RATE)
            except (OSError, MediaError) as exc:
                if strict:
                    raise LabelsError(f"{span.where}: {span.media.name} cannot be decoded: {exc}") from exc
                decoded[span.media] = None
        recording = decoded[span.media]
        if recording is None:
            gone += 1
            continue
        start = span.start_s or 0.0
        end = recording.duration_s if span.end_s is None else span.end_s
        if end > recording.duration_s + 0.05 or start >= recording.duration_s:
            if strict:
                raise LabelsError(f"{span.where}: the span {start:g}-{end:g} s is past the end of "
                                  f"{span.media.name} ({recording.duration_s:.2f} s long)")
            gone += 1
            continue
        channel = min(max(span.channel, 0), recording.channels - 1)
        clip = slice_mono(recording, channel, start, min(end, recording.duration_s))
        if clip.size < MIN_SPAN_S * features.SAMPLE_RATE:
            if strict:
                raise LabelsError(f"{span.where}: {span.media.name} holds less than {MIN_SPAN_S} s of audio")
            gone += 1
            continue
        audio.append(clip)
        used.append(index)
    if gone:
        log(f"{gone} span(s) skipped: their media is gone or shorter than the span")
    return audio, used
