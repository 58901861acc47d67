"""What the call page says before its details: the summary a supervisor reads first (the
customer's sentiment from start to end, the worst moment, alerts, talk measures) and, per segment,
one readable line of reason with the evidence and the model's internals kept for those who open
them.

The reasoning sentence the pipeline writes (worker.pipeline.reasoning.summary) starts with who and
when and ends with the label and confidence, which the page already shows beside it; the line here
is its middle, the claims. Evidence items of the voice classifier itself ("classifier: 0.621",
"raw: boredom") are the model's internals, not reasons a supervisor can check by listening."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from api.schemas import EvidenceItem, TimelineSegment
from db.queries.analytics import SUBJECT_ROLES

INTERNAL_CUES = frozenset({"classifier"})
# A valence change smaller than this from the first to the last moment reads as "steady".
STEADY_WITHIN = 0.15


def reason_line(seg: TimelineSegment) -> str:
    """One sentence: why this segment got its label, or why it has none."""
    if seg.label is None:
        # The policy reason ends with the legal ground, said once per call on the page.
        why = (seg.skip_reason or "").split(";")[0].strip()
        return f"Not analyzed: {why}" if why else "Waiting for analysis"
    text = seg.reasoning_text or ""
    _, sep, rest = text.partition(": ")
    claims = rest.rsplit("; →", 1)[0].strip() if sep else ""
    if not claims:
        readable = [e.text for e in seg.reasoning or [] if e.cue not in INTERNAL_CUES and e.text]
        claims = readable[0] if readable else "the voice as a whole; no single cue stands out"
    return claims[:1].upper() + claims[1:]


def readable_evidence(seg: TimelineSegment) -> list[EvidenceItem]:
    return [e for e in seg.reasoning or [] if e.cue not in INTERNAL_CUES and e.text]


@dataclass(frozen=True)
class Moment:
    start_s: float
    label: str
    valence: float | None


@dataclass(frozen=True)
class RoleTalk:
    role: str
    seconds: float
    share: float  # of all speech in the call
    turns: int
    longest_s: float


@dataclass(frozen=True)
class CallOverview:
    first: Moment | None
    last: Moment | None
    trend: str | None  # "improved", "worsened", "steady"; None without valence at both ends
    talk: list[RoleTalk]
    analyzed_roles: list[str]
    unanalyzed_roles: dict[str, str]  # role → why it carries no emotion (e.g. tenant policy)


def _moment(seg: TimelineSegment) -> Moment:
    assert seg.label is not None
    return Moment(seg.start_s, seg.correction.label if seg.correction else seg.label, seg.valence)


def overview(segments: Sequence[TimelineSegment]) -> CallOverview:
    subject = [s for s in segments if s.label is not None and s.role in SUBJECT_ROLES]
    first = _moment(subject[0]) if subject else None
    last = _moment(subject[-1]) if len(subject) > 1 else None
    trend = None
    if first and last and first.valence is not None and last.valence is not None:
        delta = last.valence - first.valence
        trend = "steady" if abs(delta) < STEADY_WITHIN else ("improved" if delta > 0 else "worsened")
    per_role: dict[str, list[float]] = defaultdict(list)
    for s in segments:
        per_role[s.role].append(max(0.0, s.end_s - s.start_s))
    total = sum(sum(v) for v in per_role.values()) or 1.0
    order = {"customer": 0, "unknown": 1}
    talk = [RoleTalk(role, sum(v), sum(v) / total, len(v), max(v))
            for role, v in sorted(per_role.items(), key=lambda kv: (order.get(kv[0], 2), kv[0]))]
    analyzed = [t.role for t in talk if any(s.analyzed for s in segments if s.role == t.role)]
    unanalyzed = {t.role: next((s.skip_reason for s in segments if s.role == t.role and s.skip_reason),
                               "not analyzed") or "not analyzed"
                  for t in talk if t.role not in analyzed}
    return CallOverview(first, last, trend, talk, analyzed, unanalyzed)
