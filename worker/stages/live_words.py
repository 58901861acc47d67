"""Words for a live call's segments, heard as the call goes on.

An uploaded call gets its transcript from the `asr` stage before any inference; a live call cannot
wait for its end, so the infer stage calls this before it runs the model: the segments of its batch
that belong to a call streamed in over /v1/live (and still on its first analysis) are transcribed
with the worker's ASR model, span by span, and their words are merged into the call's `asr`
transcript. The text model then reads them like any transcript's words, `words` rules match them,
and the socket's `segment` event carries them.

Never a reason to lose an analysis: a model that cannot load, audio that does not read or a crash in
the recogniser costs the words of these segments only (logged), and inference goes on without them.
A client's own transcript (`PUT /v1/recordings/{id}/transcript` while the call streams) wins."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select

from callpulse.settings import Settings
from db.models import Recording, RecordingStatus, Segment
from db.queries import pipeline as q
from db.queries.corrections import get_transcript, put_transcript
from db.session import transaction
from worker import runtime
from worker.pipeline.media import audio_store
from worker.pipeline.speech import asr
from worker.pipeline.text.transcript_index import TranscriptIndex
from worker.stages.inference_inputs import Source

log = logging.getLogger(__name__)

# Recording.container of calls opened by the live stage (worker/stages/live.py).
LIVE_CONTAINERS = ("live", "twilio")
FORMAT = "asr"


@dataclass(frozen=True)
class _Call:
    """One live call's segments still lacking words, as plain values (nothing ORM leaves the
    transaction)."""

    recording_id: uuid.UUID
    media_uri: str
    cache: Path
    channel_roles: dict[int, str]
    language: str | None
    spans: list[asr.Span]


def transcribe_live_segments(segment_ids: list[uuid.UUID], settings: Settings) -> set[uuid.UUID]:
    """Transcribe the live-call segments among ``segment_ids`` that have no words yet; returns the
    recordings whose transcript got words. Inference does not depend on it succeeding."""
    if not settings.asr_enabled or not settings.live_asr_enabled or not segment_ids:
        return set()
    calls = _calls_needing_words(segment_ids, settings)
    if not calls:
        return set()
    try:
        model = runtime.asr_model(settings)
    except asr.AsrUnavailable as exc:
        log.error("no words for live segments: the ASR model did not load (%s)", exc)
        return set()
    done: set[uuid.UUID] = set()
    for call in calls:
        try:
            audio = audio_store.load_or_decode(call.cache, call.media_uri, settings.sample_rate)
            if isinstance(model, asr.AsrModel):  # a transformers checkpoint (GPU workers)
                rows = asr.transcribe(model, audio, call.channel_roles, speech=call.spans,
                                      language=call.language, batch_size=settings.asr_batch_size)
            else:
                rows = model.transcribe(audio, call.channel_roles, speech=call.spans, language=call.language,
                                        batch_size=settings.asr_batch_size)
        except SoftTimeLimitExceeded:
            raise  # the task's time is up: not the words' fault
        except Exception:
            log.exception("no words for %d segment(s) of live call %s", len(call.spans), call.recording_id)
            continue
        _merge(call.recording_id, rows)
        done.add(call.recording_id)
    return done


def refresh_words(sources: dict[uuid.UUID, Source], recording_ids: set[uuid.UUID]) -> None:
    """Give the infer stage's sources (read before the words existed) the transcripts just written."""
    with transaction() as s:
        for rec_id in recording_ids & set(sources):
            row = get_transcript(s, rec_id)
            if row is not None:
                sources[rec_id].transcript = TranscriptIndex.from_rows(row.utterances)


def _calls_needing_words(segment_ids: list[uuid.UUID], settings: Settings) -> list[_Call]:
    with transaction() as s:
        rows = list(s.execute(
            select(Segment.recording_id, Segment.channel, Segment.start_s, Segment.end_s)
            .join(Recording, Recording.id == Segment.recording_id)
            .where(Segment.id.in_(segment_ids), Segment.analyzed.is_(True),
                   Recording.container.in_(LIVE_CONTAINERS), Recording.analysis_round == 0,
                   Recording.status.in_((RecordingStatus.live.value, RecordingStatus.analyzing.value)))
        ))
        by_call: dict[uuid.UUID, list[asr.Span]] = {}
        for rec_id, channel, start_s, end_s in rows:
            by_call.setdefault(rec_id, []).append(asr.Span(int(channel), float(start_s), float(end_s)))
        calls = []
        for rec_id, spans in sorted(by_call.items()):
            rec = s.get(Recording, rec_id)
            if rec is None:
                continue
            transcript = get_transcript(s, rec_id)
            if transcript is not None and transcript.source != "asr":
                continue  # the client's transcript wins
            heard = transcript.utterances if transcript is not None else []
            missing = [sp for sp in spans if not _covered(sp, heard)]
            if missing:
                calls.append(_Call(rec_id, rec.media_uri,
                                   audio_store.cache_path(settings.resolved_media_dir, rec.tenant_id, rec_id),
                                   {int(k): v for k, v in (rec.channel_roles or {}).items()},
                                   rec.language or settings.asr_language, missing))
        return calls


def _covered(span: asr.Span, rows: list[dict[str, Any]]) -> bool:
    """Whether the transcript already has an utterance on the span's channel centred inside it (a
    duplicate message, or another task of the call transcribed it first). By the midpoint: the last
    word of the previous turn may run past that turn's end into this span."""
    for row in rows:
        channel = row.get("channel")
        if channel is not None and int(channel) != span.channel:
            continue
        middle = (float(row.get("start_s", -1.0)) + float(row.get("end_s", -1.0))) / 2
        if span.start_s <= middle <= span.end_s:
            return True
    return False


def _merge(recording_id: uuid.UUID, rows: list[dict[str, Any]]) -> None:
    """Add the new utterances to the call's transcript, under the recording's lock (two infer tasks
    of one call may both be here); an utterance overlapping one already stored on its channel is a
    duplicate and is dropped."""
    if not rows:
        return
    with transaction() as s:
        rec = q.lock_recording(s, recording_id)
        if rec is None or RecordingStatus(rec.status).is_final:
            return
        transcript = get_transcript(s, recording_id)
        if transcript is not None and transcript.source != "asr":
            return
        stored = list(transcript.utterances) if transcript is not None else []
        fresh = [r for r in rows if not _covered(_span_of(r), stored)]
        if not fresh:
            return
        merged = sorted(stored + fresh, key=lambda r: (float(r["start_s"]), int(r.get("channel") or 0)))
        put_transcript(s, recording_id, FORMAT, merged, source="asr")


def _span_of(row: dict[str, Any]) -> asr.Span:
    return asr.Span(int(row.get("channel") or 0), float(row["start_s"]), float(row["end_s"]))
