"""Conversation measures of one call: who talked how much, the silences, who interrupted whom,
how fast and how loud each turn was, and the customer's sentiment over the call.

Supervisors read these before any emotion label (Contact Lens reports the same family: talk time,
non-talk time, interruptions, talk speed, a -5..+5 sentiment per call and per period), and they
need nothing but the segments: their times and roles, their prosody, their words when a
transcript exists, and the predictions' valence and confidence. A pure function, so the API (a
call still streaming), the completion (stored on the recording for analytics and webhooks) and
the rules all compute the same numbers."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the API imports this module; the database layer is loaded only where used
    from sqlalchemy.orm import Session

    from db.models import Prediction, Recording, Segment

# Quiet stretches longer than this are "non-talk time" (shorter ones are the rhythm of speech).
SILENCE_OVER_S = 2.0
# Overlaps shorter than this are the VAD's padding at a turn change, not one speaker cutting in.
MIN_OVERLAP_S = 0.2
SENTIMENT_ROLE = "customer"
QUARTERS = 4


@dataclass(frozen=True)
class Turn:
    """What the measures need of one segment."""

    index: int
    role: str
    start_s: float
    end_s: float
    loudness_db: float | None = None
    syllables_per_s: float | None = None
    words: int | None = None  # words said inside it, None without a transcript
    valence: float | None = None
    confidence: float | None = None

    @property
    def seconds(self) -> float:
        return max(0.0, self.end_s - self.start_s)


@dataclass
class _Interval:
    spans: list[tuple[float, float]] = field(default_factory=list)

    def union(self) -> list[tuple[float, float]]:
        merged: list[list[float]] = []
        for a, b in sorted(self.spans):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        return [(a, b) for a, b in merged]


def _total(spans: Sequence[tuple[float, float]]) -> float:
    return sum(b - a for a, b in spans)


def measure(turns: Sequence[Turn], duration_s: float | None) -> dict[str, Any]:
    """Every measure of a call (or of the part of a live call analyzed so far)."""
    turns = sorted(turns, key=lambda t: (t.start_s, t.index))
    duration = max([duration_s or 0.0] + [t.end_s for t in turns])
    by_role: dict[str, _Interval] = {}
    for turn in turns:
        by_role.setdefault(turn.role, _Interval()).spans.append((turn.start_s, turn.end_s))
    talk = {role: round(_total(spans.union()), 3) for role, spans in sorted(by_role.items())}
    speech = _Interval([s for spans in by_role.values() for s in spans.spans]).union()
    return {
        "duration_s": round(duration, 3),
        "talk": {role: {"seconds": seconds, "share": _share(seconds, duration)}
                 for role, seconds in talk.items()},
        "non_talk": _non_talk(speech, duration),
        "interruptions": _interruptions(turns),
        "talk_speed": _talk_speed(turns),
        "loudness": _loudness(turns),
        "sentiment": sentiment(turns, duration),
    }


def _share(seconds: float, duration: float) -> float:
    return round(seconds / duration, 4) if duration > 0 else 0.0


def _non_talk(speech: list[tuple[float, float]], duration: float) -> dict[str, Any]:
    gaps: list[dict[str, float]] = []
    cursor = 0.0
    for a, b in [*speech, (duration, duration)]:
        if a - cursor > SILENCE_OVER_S:
            gaps.append({"start_s": round(cursor, 3), "end_s": round(a, 3),
                         "duration_s": round(a - cursor, 3)})
        cursor = max(cursor, b)
    total = round(sum(g["duration_s"] for g in gaps), 3)
    return {"total_s": total, "share": _share(total, duration), "silences": gaps}


def _interruptions(turns: Sequence[Turn]) -> dict[str, Any]:
    """A turn that starts while another role's turn is still going: the later speaker interrupted.
    Overtalk is the time both spoke, counted once however many turns overlap."""
    items: list[dict[str, Any]] = []
    overlaps: list[tuple[float, float]] = []
    for i, turn in enumerate(turns):
        for earlier in turns[:i]:
            if earlier.role == turn.role or not earlier.start_s < turn.start_s < earlier.end_s:
                continue
            end = min(earlier.end_s, turn.end_s)
            if end - turn.start_s < MIN_OVERLAP_S:
                continue
            overlaps.append((turn.start_s, end))
            items.append({"at_s": round(turn.start_s, 3), "interrupter": turn.role,
                          "interrupted": earlier.role, "overlap_s": round(end - turn.start_s, 3),
                          "segment_index": turn.index})
    per_role: dict[str, int] = {}
    for item in items:
        per_role[item["interrupter"]] = per_role.get(item["interrupter"], 0) + 1
    return {"count": len(items), "total_s": round(_total(_Interval(overlaps).union()), 3),
            "by_role": per_role, "items": items}


def _talk_speed(turns: Sequence[Turn]) -> dict[str, Any]:
    """Words per minute where the transcript gives words, else the prosody's syllable rate."""
    out: dict[str, Any] = {}
    for role in sorted({t.role for t in turns}):
        mine = [t for t in turns if t.role == role]
        seconds = sum(t.seconds for t in mine)
        worded = [t for t in mine if t.words is not None]
        if worded and sum(t.words or 0 for t in worded) > 0:
            spoken = sum(t.seconds for t in worded)
            out[role] = {"words_per_minute": round(60.0 * sum(t.words or 0 for t in worded) / spoken, 1),
                         "source": "words"}
            continue
        rated = [t for t in mine if t.syllables_per_s]
        if rated and seconds > 0:
            rate = sum((t.syllables_per_s or 0.0) * t.seconds for t in rated) / sum(t.seconds for t in rated)
            out[role] = {"syllables_per_s": round(rate, 2), "source": "syllables"}
    return out


def _loudness(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """Each turn's loudness in dB against its speaker role's own median turn (+6: much louder)."""
    medians = {}
    for role in {t.role for t in turns}:
        levels = [t.loudness_db for t in turns if t.role == role and t.loudness_db is not None
                  and t.loudness_db > -99]
        if levels:
            medians[role] = statistics.median(levels)
    return [{"segment_index": t.index, "role": t.role, "start_s": t.start_s, "end_s": t.end_s,
             "relative_db": round(t.loudness_db - medians[t.role], 2)}
            for t in turns if t.role in medians and t.loudness_db is not None and t.loudness_db > -99]


def _score(turns: Sequence[Turn]) -> float | None:
    """-5..+5: the turns' valence weighted by confidence and length."""
    weights = [(t.valence or 0.0, (t.confidence or 0.0) * t.seconds) for t in turns if t.valence is not None]
    total = sum(w for _, w in weights)
    if total <= 0:
        return None
    return round(max(-5.0, min(5.0, 5.0 * sum(v * w for v, w in weights) / total)), 2)


def sentiment(turns: Sequence[Turn], duration: float) -> dict[str, Any]:
    """The customer's sentiment over the call and per quarter of it, and the trend (last quarter
    with analyzed speech minus the first): what a supervisor reads first."""
    mine = [t for t in turns if t.role == SENTIMENT_ROLE and t.valence is not None]
    quarters: list[float | None] = []
    for q in range(QUARTERS):
        lo, hi = duration * q / QUARTERS, duration * (q + 1) / QUARTERS
        quarters.append(_score([t for t in mine if lo <= (t.start_s + t.end_s) / 2 < hi
                                or (q == QUARTERS - 1 and (t.start_s + t.end_s) / 2 >= hi)]))
    known = [s for s in quarters if s is not None]
    trend = round(known[-1] - known[0], 2) if len(known) >= 2 else None
    return {"role": SENTIMENT_ROLE, "overall": _score(mine), "by_quarter": quarters, "trend": trend}


def turns_from_rows(rows: Sequence[tuple[Segment, Prediction | None]],
                    words_of: Callable[[Segment], int | None] | None = None) -> list[Turn]:
    """Turns from (Segment, newest Prediction | None) rows; ``words_of(segment)`` counts a
    segment's transcript words, or is None when the call has no transcript."""
    out = []
    for seg, pred in rows:
        acoustics = seg.acoustics or {}
        out.append(Turn(
            index=seg.index, role=seg.role, start_s=float(seg.start_s), end_s=float(seg.end_s),
            loudness_db=_num(acoustics.get("loudness_db")), syllables_per_s=_num(acoustics.get("rate_per_s")),
            words=words_of(seg) if words_of is not None else None,
            valence=pred.valence if pred is not None else None,
            confidence=pred.confidence if pred is not None else None,
        ))
    return out


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def measure_recording(session: Session, rec: Recording) -> dict[str, Any]:
    """The measures of a stored recording, from its timeline rows and transcript."""
    from db.queries import corrections, recordings
    from worker.pipeline.text.transcript_index import TranscriptIndex

    rows = recordings.timeline(session, rec.id)
    transcript = corrections.get_transcript(session, rec.id)
    words_of: Callable[[Segment], int | None] | None = None
    if transcript is not None:
        index = TranscriptIndex.from_rows(transcript.utterances)

        def count(seg: Segment) -> int | None:
            return len(index.words(seg.start_s, seg.end_s, seg.channel))

        words_of = count

    return measure(turns_from_rows(rows, words_of), rec.duration_s)
