"""A recording's timeline with everything a reader sees beside the predictions: the transcript's
words per segment and supervisors' corrections (used by the API, the dashboard and the CLI)."""

from __future__ import annotations

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
    return Timeline.build(rec, rows, words, labels)
