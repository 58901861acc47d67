"""A recording's timeline with everything a reader sees beside the predictions: the transcript's
words per segment and supervisors' corrections (used by the API, the dashboard and the CLI)."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy.orm import Session

from api.schemas import Timeline
from db.models import Recording
from db.queries import corrections, recordings
from worker.pipeline.text.transcript_index import TranscriptIndex


def recording_timeline(session: Session, rec: Recording) -> Timeline:
    rows = recordings.timeline(session, rec.id)
    row = corrections.get_transcript(session, rec.id)
    words = TranscriptIndex.from_rows(row.utterances) if row is not None else None
    labels = corrections.labels_of(session, [seg.id for seg, _ in rows])
    source: Literal["upload", "asr"] | None = (None if row is None else "asr" if row.source == "asr"
                                               else "upload")
    return Timeline.build(rec, rows, words, labels, transcript_source=source,
                          language=heard_language(row.utterances) if row is not None else None)


def heard_language(rows: list[dict[str, Any]]) -> str | None:
    """The language our ASR heard for the longest time over the call (channels may differ)."""
    spoken: dict[str, float] = {}
    for r in rows:
        if r.get("language"):
            spoken[r["language"]] = spoken.get(r["language"], 0.0) + max(0.0, r["end_s"] - r["start_s"])
    return max(spoken, key=lambda k: spoken[k]) if spoken else None
