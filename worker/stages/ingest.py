"""Ingest stage: decode, segment by voice activity, measure prosody and store the segments with the
tenant's analysis policy applied; then hand the analyzable segments to inference (or to ASR first)."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

from callpulse.settings import Settings
from db.models import RecordingStatus
from db.queries import pipeline as q
from db.session import transaction
from worker import runtime
from worker.pipeline.media import audio_store, decode
from worker.pipeline.speech import prosody
from worker.pipeline.speech import vad as segment
from worker.stages.lifecycle import (
    Followups,
    cache_path,
    fail_recording,
    resume_inference,
)

log = logging.getLogger(__name__)


POLICY_NOTE = (
    "emotion inference on employees at work is prohibited in the EU (AI Act Art. 5(1)(f))"
)


def ingest(recording_id: uuid.UUID, settings: Settings) -> Followups:
    """Decode, segment and measure prosody; store segments. Idempotent per recording."""
    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is None or RecordingStatus(rec.status).is_final:
            return Followups()
        if q.has_segments(s, rec.id):
            # A re-run after segmentation committed: only the inference may be missing.
            return resume_inference(s, rec, settings)
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
        cache = cache_path(settings, rec)

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
        return resume_inference(s, rec, settings)


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
