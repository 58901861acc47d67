"""Loading what the pure evaluator needs from the database: a recording's trajectory (the
predicted prefix of its call) and parsed definitions (cached per immutable rule version)."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from threading import Lock

from sqlalchemy.orm import Session

from db.models import Prediction, RuleVersion, Segment
from db.queries.corrections import get_transcript
from db.queries.recordings import timeline
from worker.conversation import turns_from_rows
from worker.pipeline.text.transcript_index import TranscriptIndex
from worker.rules.conversation_rules import Context
from worker.rules.evaluate import Point
from worker.rules.language import RuleDefinition, parse_definition

_CACHE_SIZE = 4096
_definitions: OrderedDict[uuid.UUID, RuleDefinition] = OrderedDict()
_lock = Lock()


def predicted_prefix(rows: Sequence[tuple[Segment, Prediction | None]],
                     texts: Mapping[uuid.UUID, str] | None = None) -> list[Point]:
    """Points in call order up to the first analyzed segment still waiting for its prediction.

    Inference batches may land out of order; evaluating only the unbroken prefix keeps every
    evaluation a prefix of the final one, so episodes (and their window keys) never shift when an
    earlier batch lands late. Segments that are not analyzed (role policy, inference failure)
    never block the prefix. ``texts``: each segment's transcript words (absent: no transcript)."""
    texts = texts or {}
    context = Context(turns_from_rows(
        rows, lambda seg: len(texts[seg.id].split()) if seg.id in texts else None))
    points: list[Point] = []
    for seg, pred in rows:
        if pred is None:
            if seg.analyzed:
                break
            continue
        points.append(Point(
            index=seg.index, role=seg.role, start_s=seg.start_s, end_s=seg.end_s, label=pred.label,
            scores=pred.scores or {}, valence=pred.valence, arousal=pred.arousal,
            confidence=pred.confidence,
            text=texts.get(seg.id), segment_id=seg.id, context=context,
        ))
    return points


def load(session: Session, recording_id: uuid.UUID) -> list[Point]:
    rows = timeline(session, recording_id)
    return predicted_prefix(rows, segment_texts(session, recording_id, rows))


def segment_texts(session: Session, recording_id: uuid.UUID,
                  rows: Sequence[tuple[Segment, Prediction | None]]) -> dict[uuid.UUID, str]:
    """The transcript words said inside each segment on its channel, for `words` conditions; empty
    when the recording has no transcript (then `words` is false everywhere)."""
    row = get_transcript(session, recording_id)
    if row is None:
        return {}
    words = TranscriptIndex.from_rows(row.utterances)
    return {seg.id: " ".join(w.text for w in words.words(seg.start_s, seg.end_s, seg.channel))
            for seg, _ in rows}


def definition_of(version: RuleVersion) -> RuleDefinition:
    """Versions never change, so a parsed definition can be reused for as long as we like."""
    with _lock:
        cached = _definitions.get(version.id)
        if cached is not None:
            _definitions.move_to_end(version.id)
            return cached
    definition = parse_definition(version.definition)
    with _lock:
        _definitions[version.id] = definition
        while len(_definitions) > _CACHE_SIZE:
            _definitions.popitem(last=False)
    return definition
