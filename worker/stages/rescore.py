"""Rescoring a finished recording with the current model version (POST /v1/recordings/{id}/rescore).

Runs on the `infer` queue: the worker that will run the model is the one that knows its version.
Older versions' predictions are never touched; the timeline shows the newest."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy import delete, select, update

from callpulse.settings import Settings
from db.models import Prediction, Recording, RecordingStatus, Segment
from db.queries import pipeline as q
from db.session import transaction
from worker import runtime
from worker.stages.lifecycle import Followups, batches

log = logging.getLogger(__name__)


def rescore(recording_id: uuid.UUID, settings: Settings, force: bool = False,
            expected_round: int | None = None, rerun_rules: bool = False) -> Followups:
    """``expected_round``: the recording's analysis_round when the rescore was asked for; a
    redelivered or doubled request finds the round moved on and does nothing. ``rerun_rules``:
    when there is nothing to rescore, evaluate the call's rules again instead.

    The outcome is kept in recording.last_rescore (GET /v1/recordings/{id}), so a rescore that
    found nothing to do says so."""
    model = runtime.emotion_model(settings)
    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is None:
            return Followups()
        if expected_round is not None and (rec.analysis_round or 0) != expected_round:
            log.info("rescore of %s already done (round %s)", rec.id, rec.analysis_round)
            return Followups()
        if not RecordingStatus(rec.status).is_final or rec.final_event_at is None:
            # Still being analyzed (that run finishes with the current version anyway), or its
            # completion event not yet published: reopening now would lose that event.
            return Followups()
        if not q.has_segments(s, rec.id):
            # It failed before segmentation (decoding): rescoring means trying the whole pipeline again.
            rec.attempts = 0
            _reopen(rec, RecordingStatus.received)
            return Followups(ingest=[rec.id])
        segment_ids = select(Segment.id).where(Segment.recording_id == rec.id).scalar_subquery()
        if force:
            s.execute(delete(Prediction).where(
                Prediction.segment_id.in_(segment_ids), Prediction.model_name == model.name,
                Prediction.model_version == model.version))
        # A fresh run gets fresh attempt budgets, and segments whose inference failed are tried
        # again (a model update may fix what crashed the old one). Policy skips (never attempted,
        # infer_attempts 0) stay skipped.
        s.execute(update(Segment).where(Segment.recording_id == rec.id, Segment.analyzed.is_(False),
                                        Segment.infer_attempts > 0)
                  .values(analyzed=True, skip_reason=None))
        s.execute(update(Segment).where(Segment.recording_id == rec.id).values(infer_attempts=0))
        pending = q.pending_segment_ids(s, rec.id, model.name, model.version)
        if not pending:
            message = (f"nothing to do: every analyzable segment already has a prediction of "
                       f"{model.version}; send force to replace them"
                       + ("; the call's rules were evaluated again" if rerun_rules else ""))
            log.info("rescore of %s: %s", rec.id, message)
            rec.last_rescore = _outcome(model.version, "nothing_to_do", 0, rerun_rules, message)
            return Followups(evaluate_rules=[rec.id] if rerun_rules else [])
        rec.last_rescore = _outcome(model.version, "rescoring", len(pending), False,
                                    f"{len(pending)} segment(s) enqueued for {model.version}")
        _reopen(rec, RecordingStatus.analyzing)
        return Followups(infer_batches=batches(pending, settings.infer_batch_size))


def _outcome(version: str, outcome: str, segments: int, rules_rerun: bool, message: str) -> dict[str, object]:
    return {"at": datetime.now(UTC).isoformat(), "model_version": version, "outcome": outcome,
            "segments": segments, "rules_rerun": rules_rerun, "message": message}


def _reopen(rec: Recording, status: RecordingStatus) -> None:
    q.set_status(rec, status)
    # Finishing again publishes recording.completed (or .failed) again, through the same outbox,
    # as a new event (its webhook-id includes the round) so receivers that dedupe still see it.
    rec.completed_at = None
    rec.final_event_at = None
    rec.analysis_round = (rec.analysis_round or 0) + 1
