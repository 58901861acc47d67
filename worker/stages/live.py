"""Stage bodies of a live call (WebSocket /v1/live): open the recording, store segments as the
streaming VAD closes them, finish the call. Each function is a transaction boundary and returns
what to enqueue after its commit, like the other stages; the API's socket handler calls them from
a worker thread, and the sweep finishes calls whose API process died mid-stream.

A live recording is an ordinary recording whose audio grows: status `live` while it streams (the
infer stage analyzes its segments as they come but never completes it), `analyzing` once the stream
has ended (stop, or a dropped socket: `disconnected`), then `done` the usual way."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from callpulse.settings import Settings
from db.models import Prediction, Recording, RecordingStatus, Segment, Tenant, utcnow
from db.queries import pipeline as q
from db.queries.recordings import get_recording_by_external_id
from db.session import transaction
from worker.pipeline.media import audio_store, live_audio
from worker.pipeline.speech import prosody
from worker.pipeline.speech.vad import speaker_name

log = logging.getLogger(__name__)


class Refused(Exception):
    """A stream the server will not take; ``code`` is the WebSocket close code."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


TOO_MANY_STREAMS = 4429
DUPLICATE_EXTERNAL_ID = 4409


@dataclass(frozen=True)
class LiveSpec:
    """What a stream's start message declares."""

    channels: int
    channel_roles: dict[str, str]
    external_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    container: str = "live"


@dataclass(frozen=True)
class Opened:
    recording_id: uuid.UUID
    folder: Path
    roles: list[str]  # role per channel
    analyzed_roles: list[str]
    analyze_unknown: bool
    # The API process's lease on the call (worker/jobs/lease.py): renewed while it streams.
    lease_ids: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class NewSegment:
    channel: int
    start_s: float
    end_s: float


def open_call(tenant_id: uuid.UUID, spec: LiveSpec, settings: Settings) -> Opened:
    """The recording row, status live, committed before any audio is taken. The tenant row is
    locked while counting its open streams, so two starts at once cannot both take the last slot."""
    with transaction() as s:
        s.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
        open_streams = s.scalar(select(func.count()).select_from(Recording).where(
            Recording.tenant_id == tenant_id, Recording.status == RecordingStatus.live.value)) or 0
        if open_streams >= settings.live_max_streams_per_tenant:
            raise Refused(f"this tenant already has {open_streams} live streams open, the most "
                          f"CALLPULSE_LIVE_MAX_STREAMS_PER_TENANT allows; retry when one ends",
                          TOO_MANY_STREAMS)
        if spec.external_id is not None and get_recording_by_external_id(s, tenant_id, spec.external_id):
            raise Refused(f"a recording with external_id '{spec.external_id}' already exists; "
                          "a live call needs a new one", DUPLICATE_EXTERNAL_ID)
        rec_id = uuid.uuid4()
        folder = audio_store.recording_dir(settings.resolved_media_dir, tenant_id, rec_id)
        rec = Recording(id=rec_id, tenant_id=tenant_id, external_id=spec.external_id, filename="live call",
                        media_uri=str(folder / "original.wav"), container=spec.container,
                        channels=spec.channels, channel_roles=spec.channel_roles, meta=spec.metadata,
                        status=RecordingStatus.live.value, duration_s=0.0)
        s.add(rec)
        analyzed_roles, analyze_unknown = q.tenant_policy(s, tenant_id)
    roles = [spec.channel_roles.get(str(c), "unknown") for c in range(spec.channels)]
    return Opened(rec_id, folder, roles, analyzed_roles, analyze_unknown)


def add_segments(call: Opened, segments: list[NewSegment]) -> list[tuple[uuid.UUID, bool]]:
    """Store closed segments (prosody measured from the audio already on disk); returns each new
    segment's id and whether it goes to the infer queue (once this has committed). Indexes follow
    closing order."""
    from worker.stages.ingest import _policy

    audio = live_audio.load_live(call.folder)
    rows: list[dict[str, Any]] = []
    for seg in segments:
        role = call.roles[seg.channel]
        analyzed, skip_reason = _policy(role, len(call.roles), call.analyzed_roles, call.analyze_unknown)
        acoustics: dict[str, Any] = {}
        if audio is not None:
            clip = audio_store.slice_mono(audio, seg.channel, seg.start_s, seg.end_s)
            acoustics = dict(prosody.measure(clip, audio.sample_rate))
        rows.append({"id": uuid.uuid4(), "recording_id": call.recording_id, "channel": seg.channel,
                     "speaker": speaker_name(role, seg.channel, call.roles), "role": role,
                     "start_s": seg.start_s, "end_s": seg.end_s, "acoustics": acoustics,
                     "analyzed": analyzed, "skip_reason": skip_reason})
    if not rows:
        return []
    with transaction() as s:
        rec = q.lock_recording(s, call.recording_id)
        if rec is None or rec.status != RecordingStatus.live.value:
            return []
        start = s.scalar(select(func.coalesce(func.max(Segment.index) + 1, 0)).where(
            Segment.recording_id == rec.id)) or 0
        for i, row in enumerate(rows):
            row["index"] = start + i
        q.insert_segments(s, rows)
        rec.duration_s = max(rec.duration_s or 0.0, max(row["end_s"] for row in rows))
        rec.updated_at = utcnow()
    return [(row["id"], bool(row["analyzed"])) for row in rows]


def heartbeat(recording_id: uuid.UUID, duration_s: float) -> None:
    """Still streaming: keeps the sweep from taking a long quiet stretch for a dead API process."""
    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is not None and rec.status == RecordingStatus.live.value:
            rec.duration_s = round(duration_s, 3)
            rec.updated_at = utcnow()


def finish(recording_id: uuid.UUID, settings: Settings, disconnected: bool) -> Any:
    """The stream has ended: the audio on disk becomes the recording's WAV, status analyzing, and
    the call completes here if every segment already has its prediction (otherwise the infer stage
    completes it with the last one). Returns the stage's Followups."""
    from worker.stages.lifecycle import Followups
    from worker.stages.lifecycle import complete as _complete

    followups = Followups()
    with transaction() as s:
        rec = s.get(Recording, recording_id)
        if rec is None or rec.status != RecordingStatus.live.value:
            return followups
        folder = Path(rec.media_uri).parent
        media = Path(rec.media_uri)
    audio = live_audio.load_live(folder)
    if audio is not None:
        live_audio.write_wav(folder, media)
    caches: list[Path] = []
    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is None or rec.status != RecordingStatus.live.value:
            return followups
        rec.disconnected = disconnected
        if audio is None or audio.duration_s <= 0:
            q.set_status(rec, RecordingStatus.failed, "the live stream ended before any audio arrived")
            followups.failed.append(rec.id)
            return followups
        rec.duration_s = round(audio.duration_s, 3)
        rec.size_bytes = media.stat().st_size
        # References made mid-call rest on the first turns only: with the whole call on disk, the
        # next inference (the call's last segments, or a rescore) makes them from all of it.
        rec.speaker_references = {}
        q.set_status(rec, RecordingStatus.analyzing)
        if not _unpredicted(s, rec.id):
            caches.append(_complete(s, rec, settings, followups))
    for cache in caches:
        audio_store.drop_cache(cache)
    return followups


def _unpredicted(s: Session, recording_id: uuid.UUID) -> int:
    """Analyzed segments without a prediction. A live call is on its first analysis, so any
    prediction is the current model's (the API process never loads the model to ask its version)."""
    has_prediction = exists().where(Prediction.segment_id == Segment.id)
    return s.scalar(select(func.count()).select_from(Segment).where(
        Segment.recording_id == recording_id, Segment.analyzed.is_(True), ~has_prediction)) or 0
