"""Pipeline stage bodies. Each one is a boundary: it owns its transactions, takes ids, locks the
recording row, does only what is missing, and returns what to enqueue *after* it has committed.
Celery tasks (worker/tasks.py) and the in-process `callpulse analyze` both call these."""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from callpulse import metrics
from callpulse.settings import Settings
from db.models import Recording, RecordingStatus, Segment, utcnow
from db.queries import pipeline as q
from db.queries.analytics import write_emotion_rollup
from db.queries.corrections import get_transcript
from db.session import transaction
from worker import conversation, inference_inputs, runtime
from worker.pipeline import audio_store, decode, prosody, segment
from worker.pipeline.contracts import (
    EmotionModel,
    EmotionResult,
    SegmentInput,
)
from worker.pipeline.fusion import ComponentUnavailable

log = logging.getLogger(__name__)

POLICY_NOTE = (
    "emotion inference on employees at work is prohibited in the EU (AI Act Art. 5(1)(f))"
)


@dataclass
class Followups:
    """Work to enqueue once the stage has committed."""

    ingest: list[uuid.UUID] = field(default_factory=list)
    infer_batches: list[list[uuid.UUID]] = field(default_factory=list)
    # Finished recordings: a final rule evaluation, which also publishes recording.completed.
    completed: list[uuid.UUID] = field(default_factory=list)
    # Recordings that got new predictions: evaluate their rules now, while the call is analyzed.
    evaluate_rules: list[uuid.UUID] = field(default_factory=list)
    # Recordings that failed: publish recording.failed.
    failed: list[uuid.UUID] = field(default_factory=list)
    # Recordings whose words come from our own ASR before inference (worker/asr_stage.py).
    transcribe: list[uuid.UUID] = field(default_factory=list)


def batches(ids: list[uuid.UUID], size: int) -> list[list[uuid.UUID]]:
    return [ids[i: i + size] for i in range(0, len(ids), max(1, size))]


def _cache(settings: Settings, rec: Recording) -> Path:
    return audio_store.cache_path(settings.resolved_media_dir, rec.tenant_id, rec.id)


def fail_recording(recording_id: uuid.UUID, reason: str, settings: Settings) -> Followups:
    """Record a final failure with its reason (used when a stage gives up)."""
    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is None or RecordingStatus(rec.status).is_final:
            return Followups()
        q.set_status(rec, RecordingStatus.failed, reason)
        cache = _cache(settings, rec)
    audio_store.drop_cache(cache)
    return Followups(failed=[recording_id])


def ingest(recording_id: uuid.UUID, settings: Settings) -> Followups:
    """Decode, segment and measure prosody; store segments. Idempotent per recording."""
    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is None or RecordingStatus(rec.status).is_final:
            return Followups()
        if q.has_segments(s, rec.id):
            # A re-run after segmentation committed: only the inference may be missing.
            return _resume_inference(s, rec, settings)
        # Counted when a worker really starts, so a recording merely waiting in a long queue is
        # never failed, while one whose decoding keeps killing its worker (out of memory, say;
        # the message comes back by reject_on_worker_lost) stops after max_attempts.
        rec.attempts += 1
        if rec.attempts > settings.max_attempts:
            q.set_status(rec, RecordingStatus.failed,
                         f"decoding was started {settings.max_attempts} times without finishing "
                         "(the worker may have run out of memory on this file)")
            return Followups(failed=[rec.id])
        q.set_status(rec, RecordingStatus.decoding)
        media = Path(rec.media_uri)
        roles = {int(k): v for k, v in (rec.channel_roles or {}).items()}
        analyzed_roles, analyze_unknown = q.tenant_policy(s, rec.tenant_id)
        cache = _cache(settings, rec)

    try:
        info = decode.probe(media)
        decode.check_duration(info, settings.min_duration_s, settings.max_duration_s)
        # Checked again here: the budget may have been lowered since the upload, and a worker
        # must refuse, with a reason, what it cannot hold rather than be killed trying.
        decode.check_budget(info, settings.sample_rate, settings.max_decoded_bytes)
        # Straight into the on-disk cache; everything below reads it memory-mapped, in slices.
        audio = decode.decode_to_file(media, cache, settings.sample_rate, info,
                                      decode.DecodeLimits.from_settings(settings))
    except decode.MediaError as exc:
        return fail_recording(recording_id, exc.reason, settings)
    except FileNotFoundError:
        return fail_recording(recording_id, "the media file is missing from storage", settings)

    try:
        rows = _segment_rows(recording_id, audio, roles, analyzed_roles, analyze_unknown, settings)
    except MemoryError:
        # Everything above reads the cache in slices; running out here means this host cannot
        # take this call at all, and another attempt would only fail the same way.
        return fail_recording(recording_id, "the worker ran out of memory segmenting this recording "
                              "(lower CALLPULSE_MAX_DECODED_BYTES or give workers more memory)", settings)

    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is None:
            # Deleted while we decoded: take back the folder the decode may have recreated.
            audio_store.remove_dir(cache.parent)
            return Followups()
        if RecordingStatus(rec.status).is_final:
            audio_store.drop_cache(cache)
            return Followups()
        if not q.has_segments(s, rec.id):
            q.insert_segments(s, rows)
        rec.duration_s = round(audio.duration_s, 3)
        rec.channels = audio.channels
        rec.has_video = audio.has_video
        # A duplicate ingest may finish after inference already began: never move status back.
        if rec.status in (RecordingStatus.received.value, RecordingStatus.decoding.value):
            q.set_status(rec, RecordingStatus.segmented)
        return _resume_inference(s, rec, settings)


def _segment_rows(recording_id: uuid.UUID, audio: Any, roles: dict[int, str], analyzed_roles: list[str],
                  analyze_unknown: bool, settings: Settings) -> list[dict[str, Any]]:
    speech = segment.run(runtime.vad_model(), audio, roles, segmentation_config(settings))
    rows = []
    for seg in speech:
        analyzed, skip_reason = _policy(seg.role, audio.channels, analyzed_roles, analyze_unknown)
        clip = audio_store.slice_mono(audio, seg.channel, seg.start_s, seg.end_s)
        rows.append({
            "id": uuid.uuid4(), "recording_id": recording_id, "index": seg.index,
            "channel": seg.channel, "speaker": seg.speaker, "role": seg.role,
            "start_s": seg.start_s, "end_s": seg.end_s,
            "acoustics": dict(prosody.measure(clip, audio.sample_rate)),
            "analyzed": analyzed,
            "skip_reason": skip_reason,
        })
    return rows


def segmentation_config(settings: Settings) -> segment.SegmentationConfig:
    return segment.SegmentationConfig(
        threshold=settings.vad_threshold,
        min_segment_s=settings.min_segment_s,
        max_segment_s=settings.max_segment_s,
        merge_gap_s=settings.merge_gap_s,
    )


def _policy(role: str, channels: int, analyzed_roles: list[str], analyze_unknown: bool) -> tuple[
    bool, str | None
]:
    """Whether a speaker's segments get emotion inference, and why not when they do not."""
    if role in analyzed_roles:
        return True, None
    if role == "unknown":
        if channels > 1:
            # One channel of an unlabelled call recording is usually the agent: analyze nothing
            # rather than risk inferring an employee's emotions.
            return False, ("channel roles unknown on a multi-channel recording: send channel_roles "
                           f"so the customer's channel can be analyzed; {POLICY_NOTE}")
        if analyze_unknown:
            return True, None
    return False, (f"role '{role}' is not analyzed under this tenant's policy "
                   f"(analyzed roles: {', '.join(analyzed_roles) or 'none'}); {POLICY_NOTE}")


def _resume_inference(s: Any, rec: Recording, settings: Settings) -> Followups:
    model = runtime.emotion_model(settings)
    pending = q.pending_segment_ids(s, rec.id, model.name, model.version)
    if not pending:
        followups = Followups()
        audio_store.drop_cache(_complete(s, rec, settings, followups))
        return followups
    if waits_for_asr(s, rec, settings):
        return Followups(transcribe=[rec.id])  # the asr stage enqueues this inference after it
    return Followups(infer_batches=batches(pending, settings.infer_batch_size))


def waits_for_asr(s: Any, rec: Recording, settings: Settings) -> bool:
    """Words before emotion: with our own ASR on, a call the client sent no transcript for is
    transcribed before its first inference (status still segmented); once inference has begun,
    the words would come too late for it."""
    return (settings.asr_enabled and rec.status == RecordingStatus.segmented.value
            and get_transcript(s, rec.id) is None)


def _complete(s: Any, rec: Recording, settings: Settings, followups: Followups) -> Path:
    """The one way a recording becomes done: with its analytics rollup in the same transaction and
    its completion follow-up. Returns the decoded cache, to drop once nothing reads it."""
    q.set_status(rec, RecordingStatus.done)
    write_emotion_rollup(s, rec.id)
    # Stored with the final status: analytics average it, recording.completed carries it.
    rec.conversation = conversation.measure_recording(s, rec)
    followups.completed.append(rec.id)
    return _cache(settings, rec)


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
                                                           _cache(settings, rec))
            if rec.status == RecordingStatus.segmented.value:
                q.set_status(rec, RecordingStatus.analyzing)
        plans = [inference_inputs.Plan(seg.id, seg.recording_id, seg.channel, seg.start_s, seg.end_s,
                                       seg.role, seg.speaker, seg.acoustics)
                 for seg in runnable if seg.recording_id in sources]
        spans = {seg.id: seg.end_s - seg.start_s for seg in runnable}

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
                caches.append(_complete(s, rec, settings, followups))
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
    except ComponentUnavailable:
        raise  # a model that cannot load fails every item alike: retry the task, mark nothing
    except Exception:
        log.exception("batch of %d failed; retrying items one by one", len(inputs))
    out: list[EmotionResult | Exception] = []
    for item in inputs:
        try:
            out.extend(model.predict([item]))
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


def sweep(settings: Settings) -> Followups:
    """Re-enqueue recordings that stopped moving (lost message, dead worker). The sweep never fails
    a recording itself: waiting in a long queue is not a fault. Ingest counts its own starts and
    gives up after max_attempts; a duplicate message is harmless because every stage is idempotent."""
    followups = Followups()
    cutoff = utcnow() - timedelta(seconds=settings.stuck_after_s)
    model = runtime.emotion_model(settings)
    per_status: dict[str, int] = defaultdict(int)
    caches: list[Path] = []
    abandoned: list[uuid.UUID] = []
    with transaction() as s:
        for rec in q.stuck_recordings(s, cutoff):
            per_status[rec.status] += 1
            rec.updated_at = utcnow()  # at most one re-enqueue per stuck_after_s
            if rec.status == RecordingStatus.live.value:
                # No heartbeat from its socket for stuck_after_s: the API process died mid-call.
                abandoned.append(rec.id)
                continue
            if rec.status in (RecordingStatus.received.value, RecordingStatus.decoding.value):
                followups.ingest.append(rec.id)
                continue
            pending = q.pending_segment_ids(s, rec.id, model.name, model.version)
            if pending and waits_for_asr(s, rec, settings):
                followups.transcribe.append(rec.id)  # its asr message was lost, or waits in the queue
            elif pending:
                followups.infer_batches.extend(batches(pending, settings.infer_batch_size))
            else:
                caches.append(_complete(s, rec, settings, followups))
        # The outbox half: final rows whose event was never published get it now (idempotent: a
        # delivery's webhook-id is derived from the event and the recording).
        for rec in q.unpublished_final_recordings(s, cutoff):
            per_status[f"{rec.status}, event unpublished"] += 1
            done = rec.status == RecordingStatus.done.value
            (followups.completed if done else followups.failed).append(rec.id)
    for cache in caches:
        audio_store.drop_cache(cache)
    for rec_id in abandoned:
        from worker import live_stage

        ended = live_stage.finish(rec_id, settings, disconnected=True)
        followups.completed += ended.completed
        followups.failed += ended.failed
    if per_status:
        log.warning("sweep re-enqueued stuck recordings: %s", dict(per_status))
    return followups


def recordings_of(segment_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    with transaction() as s:
        return q.recordings_of_segments(s, segment_ids)
