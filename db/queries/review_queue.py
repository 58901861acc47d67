"""The review queue (active learning): which of a tenant's analyzed segments a supervisor's
correction would help most. Each candidate is scored in one SQL statement from what the database
already holds, so the cost is one bounded query whatever the tenant's history:

- low confidence: 1 − the newest prediction's fused confidence;
- modality disagreement: the share of the prediction's own modalities (voice, words, face) whose
  answer differs from the fused label;
- rarity: how few corrections of the predicted label the tenant has made (1 / (1 + count)), so the
  labels the tenant's adaptation knows least about come first.

Diversity: within a call, and more so within a speaker of a call, each further segment's score is
divided down, so a page of picks spreads over calls and speakers instead of emptying one long call.
Only the tenant's most recent ``RECENT_CALLS`` calls with media are looked at (the index on
(tenant, created_at) serves that), which bounds the scan.

Excluded: corrected segments (a correction never comes back), segments without a prediction or not
analyzed (policy or failed inference), deleted calls (gone with their rows), calls whose media
retention removed (nothing to listen to, and `train --tenant` could not read their audio) and live
calls still streaming in (their audio file is still growing; they join the queue when they end)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Float, FromClause, and_, case, cast, func, literal, select, true
from sqlalchemy.orm import Session, aliased

from db.models import Prediction, Recording, RecordingStatus, Segment, SegmentLabel

RECENT_CALLS = 200
# Weights of the three signals (each in 0..1): unsureness leads, disagreement next, rarity breaks ties.
W_UNSURE, W_DISAGREE, W_RARE = 0.5, 0.3, 0.2
# A call's k-th pick is divided by 1 + CALL_SPREAD·(k−1), plus SPEAKER_SPREAD·(j−1) for a speaker's j-th.
CALL_SPREAD, SPEAKER_SPREAD = 0.25, 0.5
MODALITIES = ("audio", "text", "video")
# Fewer corrections of a label than this and the reason says the label is rarely corrected.
FEW_CORRECTIONS = 10


@dataclass(frozen=True)
class ReviewItem:
    segment_id: uuid.UUID
    recording_id: uuid.UUID
    index: int  # the segment's place in its call (the call page's #seg-N anchor)
    external_id: str | None
    filename: str
    speaker: str
    role: str
    start_s: float
    end_s: float
    label: str
    confidence: float
    model_name: str
    model_version: str
    modality_labels: dict[str, str]  # each modality's own answer, where the prediction kept one
    label_corrections: int  # the tenant's corrections of this label so far
    unsure: float
    disagreement: float
    rarity: float
    score: float  # after the spread over calls and speakers


def review_queue(session: Session, tenant_id: uuid.UUID, limit: int) -> list[ReviewItem]:
    """The ``limit`` best picks, best first; never another tenant's, never a corrected segment."""
    recent = (
        select(Recording.id, Recording.external_id, Recording.filename)
        .where(Recording.tenant_id == tenant_id, Recording.media_deleted_at.is_(None),
               Recording.status != RecordingStatus.live.value)
        .order_by(Recording.created_at.desc(), Recording.id.desc())
        .limit(RECENT_CALLS)
        .subquery("recent")
    )
    pred, on = _newest_prediction(session)
    counts = (
        select(SegmentLabel.label, func.count().label("n"))
        .where(SegmentLabel.tenant_id == tenant_id)
        .group_by(SegmentLabel.label)
        .subquery("counts")
    )
    labels = [pred.c.modalities[m]["label"].as_string() for m in MODALITIES]
    present = sum((case((m.is_not(None), 1), else_=0) for m in labels), literal(0))
    differ = sum((case((and_(m.is_not(None), m != pred.c.label), 1), else_=0) for m in labels),
                 literal(0))
    disagreement = case((present == 0, 0.0), else_=cast(differ, Float) / present)
    unsure = 1.0 - pred.c.confidence  # confidences are probabilities (0..1)
    n = func.coalesce(counts.c.n, 0)
    rarity = 1.0 / (1.0 + cast(n, Float))
    base = W_UNSURE * unsure + W_DISAGREE * disagreement + W_RARE * rarity
    scored = (
        select(Segment.id, Segment.recording_id, Segment.index.label("seg_index"), Segment.speaker,
               Segment.role, Segment.start_s, Segment.end_s, recent.c.external_id, recent.c.filename,
               pred.c.label, pred.c.confidence, pred.c.model_name, pred.c.model_version,
               *(label.label(f"m_{m}") for m, label in zip(MODALITIES, labels, strict=True)),
               n.label("n"), unsure.label("unsure"), disagreement.label("disagreement"),
               rarity.label("rarity"), base.label("base"))
        .select_from(recent)
        .join(Segment, Segment.recording_id == recent.c.id)
        .join(pred, on)
        .outerjoin(counts, counts.c.label == pred.c.label)
        .outerjoin(SegmentLabel, SegmentLabel.segment_id == Segment.id)
        .where(Segment.analyzed.is_(True), SegmentLabel.segment_id.is_(None))
        .subquery("scored")
    )
    in_call = func.row_number().over(partition_by=scored.c.recording_id,
                                     order_by=(scored.c.base.desc(), scored.c.id))
    in_speaker = func.row_number().over(partition_by=(scored.c.recording_id, scored.c.speaker),
                                        order_by=(scored.c.base.desc(), scored.c.id))
    ranked = select(scored, in_call.label("k_call"), in_speaker.label("k_speaker")).subquery("ranked")
    score = (ranked.c.base / (1.0 + CALL_SPREAD * (ranked.c.k_call - 1)
                              + SPEAKER_SPREAD * (ranked.c.k_speaker - 1))).label("score")
    rows = session.execute(select(ranked, score).order_by(score.desc(), ranked.c.id).limit(limit))
    return [ReviewItem(
        segment_id=r.id, recording_id=r.recording_id, index=r.seg_index, external_id=r.external_id,
        filename=r.filename,
        speaker=r.speaker, role=r.role, start_s=float(r.start_s), end_s=float(r.end_s), label=r.label,
        confidence=float(r.confidence), model_name=r.model_name, model_version=r.model_version,
        modality_labels={m: getattr(r, f"m_{m}") for m in MODALITIES if getattr(r, f"m_{m}") is not None},
        label_corrections=int(r.n), unsure=float(r.unsure), disagreement=float(r.disagreement),
        rarity=float(r.rarity), score=float(r.score)) for r in rows]


def _newest_prediction(session: Session) -> tuple[FromClause, ColumnElement[bool]]:
    """Each segment's newest prediction, probed per segment of the recent calls through
    ix_prediction_segment_newest, so the cost follows those calls and not the prediction table: a
    LATERAL subquery on Postgres (a plain join lets the planner hash the whole table), a correlated
    subquery elsewhere (SQLite, the embedded mode, runs those per row anyway)."""
    cols = (Prediction.id, Prediction.label, Prediction.confidence, Prediction.model_name,
            Prediction.model_version, Prediction.modalities)
    if session.get_bind().dialect.name == "postgresql":
        lateral = (select(*cols).where(Prediction.segment_id == Segment.id)
                   .order_by(Prediction.created_at.desc(), Prediction.id.desc()).limit(1).lateral("pred"))
        return lateral, true()
    latest = aliased(Prediction)
    newest_id = (select(latest.id).where(latest.segment_id == Segment.id)
                 .order_by(latest.created_at.desc(), latest.id.desc()).limit(1)
                 .correlate(Segment).scalar_subquery())
    plain = select(*cols).subquery("pred")
    return plain, plain.c.id == newest_id


MODALITY_WORDS = {"audio": "voice", "text": "words", "video": "face"}


def reasons(item: ReviewItem, uncertain_below: float) -> list[str]:
    """Why the item was picked, in words, strongest signal first; never empty."""
    out: list[tuple[float, str]] = []
    if item.confidence < uncertain_below or item.unsure * W_UNSURE >= 0.2:
        out.append((W_UNSURE * item.unsure, f"the model was unsure (confidence {item.confidence:.2f})"))
    if item.disagreement > 0:
        said = ", ".join(f"{MODALITY_WORDS.get(m, m)} said {lab}"
                         for m, lab in sorted(item.modality_labels.items()))
        out.append((W_DISAGREE * item.disagreement, f"the modalities disagree ({said}; fused: {item.label})"))
    if item.label_corrections < FEW_CORRECTIONS:
        n = item.label_corrections
        seen = "no corrections of" if not n else f"only {n} correction{'s' if n != 1 else ''} of"
        out.append((W_RARE * item.rarity, f"{seen} '{item.label}' yet"))
    if not out:
        out.append((0.0, f"among the least certain left (confidence {item.confidence:.2f})"))
    return [text for _, text in sorted(out, key=lambda pair: -pair[0])]
