"""Infer stage: run the emotion model on the segments still lacking its prediction, store the
predictions, and finish recordings whose analyzable segments are all predicted."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from callpulse import metrics
from callpulse.settings import Settings
from db.models import RecordingStatus, Segment, utcnow
from db.queries import pipeline as q
from db.session import transaction
from worker import runtime
from worker.pipeline.contracts import EmotionModel, EmotionResult, SegmentInput
from worker.pipeline.fusion import ComponentUnavailable
from worker.pipeline.media import audio_store
from worker.stages import inference_inputs, live_words
from worker.stages.lifecycle import (
    Followups,
    batches,
    cache_path,
    complete,
    waits_for_asr,
)

log = logging.getLogger(__name__)


def infer(segment_ids: list[uuid.UUID], settings: Settings, model: EmotionModel | None = None) -> Followups:
    """Run the emotion model on the segments still lacking its prediction; finish recordings."""
    model = model or runtime.emotion_model(settings)
    _wait_for_a_fuller_batch(segment_ids, settings, model)
    with transaction() as s:
        segments = q.pending_segments(s, segment_ids, model.name, model.version)
        if not segments:
            return Followups()
        own_recordings = {seg.recording_id for seg in segments}
        if settings.infer_max_batch > len(segments):
            # Dynamic batching: fill the batch with other recordings' waiting segments; their own
            # messages later find them done (or started) and do nothing.
            segments += q.pending_elsewhere(s, model.name, model.version, [seg.id for seg in segments],
                                            settings.infer_max_batch - len(segments))
        for seg in segments:
            seg.infer_attempts += 1
            if seg.infer_attempts > settings.max_attempts:
                seg.analyzed = False
                seg.skip_reason = (f"inference was started {settings.max_attempts} times on this segment "
                                   "without finishing (the worker may have crashed on it)")
        runnable = [seg for seg in segments if seg.analyzed]
        sources: dict[uuid.UUID, inference_inputs.Source] = {}
        for rec_id in sorted({seg.recording_id for seg in segments}):  # fixed order: no deadlocks
            rec = q.lock_recording(s, rec_id)
            if rec is None:
                continue
            speakers = {seg.speaker for seg in runnable if seg.recording_id == rec_id}
            sources[rec_id] = inference_inputs.load_source(s, rec, settings, model, speakers,
                                                           cache_path(settings, rec))
            if rec.status == RecordingStatus.segmented.value:
                q.set_status(rec, RecordingStatus.analyzing)
        plans = [inference_inputs.Plan(seg.id, seg.recording_id, seg.channel, seg.start_s, seg.end_s,
                                       seg.role, seg.speaker, seg.acoustics)
                 for seg in runnable if seg.recording_id in sources]
        spans = {seg.id: seg.end_s - seg.start_s for seg in runnable}

    # A live call has no transcript before its end: its segments (borrowed ones too) get their words
    # here first, and the text model reads them.
    heard = live_words.transcribe_live_segments([plan.segment_id for plan in plans], settings)
    if heard and settings.text_model_enabled:
        live_words.refresh_words(sources, heard)
    # Audio (and video frames) are read, or decoded again if the cache is gone, with no
    # transaction or lock held.
    inputs, keys = inference_inputs.build_inputs(plans, sources, settings, model,
                                                 inference_inputs.wants_frames(model),
                                                 frozenset(sources) - own_recordings)
    results = _predict_isolating_failures(model, inputs)

    rows, failed = [], []
    for seg_id, result in zip(keys, results, strict=True):
        if isinstance(result, Exception):
            failed.append((seg_id, f"inference failed: {type(result).__name__}: {result}"[:500]))
            continue
        rows.append(_prediction_row(seg_id, model, result))

    followups = Followups()
    caches: list[Path] = []
    with transaction() as s:
        # Recording rows first, in id order, as everywhere else: writers never wait in a cycle.
        live = [rec for rec_id in sorted(sources) if (rec := q.lock_recording(s, rec_id)) is not None]
        q.insert_predictions(s, rows)
        for rec in live:
            inference_inputs.store_references(rec, model, sources[rec.id].new_references)
        for seg_id, reason in failed:
            broken = s.get(Segment, seg_id)
            if broken is not None:
                broken.analyzed, broken.skip_reason = False, reason
        for rec in live:
            if RecordingStatus(rec.status).is_final:
                continue
            done, total = q.progress(s, rec.id, model.name, model.version)
            # A live call is never complete while it streams: more segments are on their way.
            if done >= total and rec.status != RecordingStatus.live.value:
                caches.append(complete(s, rec, settings, followups))
            else:
                rec.updated_at = utcnow()  # progress keeps the sweep away from a long call
                # Mid-call alerts on the first analysis only: while a rescore runs, the newest
                # predictions mix two model versions; its rules run once, at completion.
                if rows and not rec.analysis_round:
                    followups.evaluate_rules.append(rec.id)
    for cache in caches:
        audio_store.drop_cache(cache)
    # Counted once committed; a prediction another worker wrote first is counted by both.
    metrics.SEGMENTS_ANALYZED.inc(len(rows))
    metrics.AUDIO_SECONDS.inc(sum(spans.get(row["segment_id"], 0.0) for row in rows))
    return followups


def resume(recording_id: uuid.UUID, settings: Settings, model: EmotionModel | None = None) -> Followups:
    """A stuck segmented or analyzing recording, judged by the worker that runs the model (the
    sweep hands it here): the segments still lacking this model version's prediction go to
    inference (or to ASR first), and with none left the call is done."""
    model = model or runtime.emotion_model(settings)
    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        waiting = (RecordingStatus.segmented.value, RecordingStatus.analyzing.value)
        if rec is None or rec.status not in waiting:
            return Followups()  # final, live, or not yet segmented: not inference's to judge
        pending = q.pending_segment_ids(s, rec.id, model.name, model.version)
        if pending and waits_for_asr(s, rec, settings):
            return Followups(transcribe=[rec.id])
        if pending:
            rec.updated_at = utcnow()
            return Followups(infer_batches=batches(pending, settings.infer_batch_size))
        cache = complete(s, rec, settings, followups := Followups())
    audio_store.drop_cache(cache)
    return followups


def _wait_for_a_fuller_batch(segment_ids: list[uuid.UUID], settings: Settings, model: EmotionModel) -> None:
    """Up to CALLPULSE_INFER_MAX_WAIT_MS for other recordings' segments to arrive, when this message
    alone would not fill CALLPULSE_INFER_MAX_BATCH (a GPU runs a full batch for the price of a small
    one). Short read-only transactions: nothing is locked while waiting."""
    if settings.infer_max_batch <= len(segment_ids) or settings.infer_max_wait_ms <= 0:
        return
    deadline = time.monotonic() + settings.infer_max_wait_ms / 1000
    while time.monotonic() < deadline:
        with transaction() as s:
            others = q.pending_elsewhere(s, model.name, model.version, segment_ids,
                                         settings.infer_max_batch - len(segment_ids))
        if len(segment_ids) + len(others) >= settings.infer_max_batch:
            return
        time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))


def _predict_isolating_failures(
    model: EmotionModel, inputs: list[SegmentInput]
) -> list[EmotionResult | Exception]:
    """One bad segment must not fail its batch-mates: on error, retry the items one by one."""
    if not inputs:
        return []
    try:
        return list(model.predict(inputs))
    except (ComponentUnavailable, SoftTimeLimitExceeded):
        raise  # a model that cannot load fails every item alike: retry the task, mark nothing
    except Exception:
        log.exception("batch of %d failed; retrying items one by one", len(inputs))
    out: list[EmotionResult | Exception] = []
    for item in inputs:
        try:
            out.extend(model.predict([item]))
        except SoftTimeLimitExceeded:
            raise  # the task's time is up: not this segment's fault
        except Exception as exc:  # recorded on the segment, never lost silently
            out.append(exc)
    failures = [r for r in out if isinstance(r, Exception)]
    if len(inputs) > 1 and len(failures) == len(inputs):
        # Not one segment went through: the model or device is broken, not the audio. Raise so the
        # task retries, instead of marking every segment unanalyzable for good.
        raise failures[0]
    return out


def _prediction_row(segment_id: uuid.UUID, model: EmotionModel, r: EmotionResult) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(), "segment_id": segment_id,
        "model_name": model.name, "model_version": model.version,
        "label": r.label, "raw_label": r.raw_label, "scores": r.scores,
        "valence": r.valence, "arousal": r.arousal, "confidence": r.confidence,
        "reasoning": [dict(e) for e in r.evidence], "reasoning_text": r.reasoning_text,
        "uncertain": r.uncertain, "modalities": r.modalities,
        "created_at": utcnow(),
    }
