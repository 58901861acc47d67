"""/v1/recordings: upload a call, follow its analysis, read its emotion timeline, list, delete."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.deps import PageDep, SessionDep, SettingsDep, TenantDep, encode_cursor, validation_error
from api.schemas import (
    ErrorOut,
    Progress,
    RecordingAccepted,
    RecordingDetail,
    RecordingPage,
    RecordingSummary,
    RoleCountsOut,
    Timeline,
    UploadMetadata,
)
from api.schemas_quality import LastRescore, RescoreAccepted, RescoreIn
from api.timeline import recording_timeline
from api.transcript_upload import read_transcript
from db.models import Recording, RecordingStatus, Tenant
from db.queries import corrections as corrections_q
from db.queries import recordings as queries
from worker import conversation
from worker.jobs import names, outbox
from worker.pipeline.media import audio_store, decode

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/recordings", tags=["recordings"])

COPY_CHUNK_BYTES = 1024 * 1024
NOT_FOUND = "recording not found"
# Sent by name (the name worker.jobs.ingest.ingest_recording registers, routed to the "ingest" queue) so
# the API process does not import the worker's stages and, with them, torch and the models.
INGEST_TASK = names.INGEST.name
RESCORE_TASK = names.RESCORE.name
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, invalid or revoked API key"},
    404: {"model": ErrorOut, "description": "No such recording for this tenant"},
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"model": RecordingAccepted, "description": "Repeat of an external_id: the existing recording"},
    401: ERRORS[401],
    413: {"model": ErrorOut, "description": "Upload larger than the configured limit, or audio whose "
                                            "decoded size (channels × duration × 16 kHz × 2 bytes) "
                                            "exceeds CALLPULSE_MAX_DECODED_BYTES"},
    415: {"model": ErrorOut, "description": "Not decodable audio/video, or an unsupported container"},
    422: {"model": ErrorOut, "description": "Bad metadata, or media without usable audio"},
}


def upload_too_large(limit: int) -> str:
    return f"the upload is larger than the limit of {limit} bytes"


def _status_url(recording_id: uuid.UUID) -> str:
    return f"{router.prefix}/{recording_id}"


def _accepted(rec: Recording, response: Response, code: int) -> RecordingAccepted:
    response.status_code = code
    response.headers["Location"] = _status_url(rec.id)
    return RecordingAccepted(
        id=rec.id, status=RecordingStatus(rec.status), status_url=_status_url(rec.id),
        timeline_url=f"{_status_url(rec.id)}/timeline", external_id=rec.external_id,
        created_at=rec.created_at,
    )


def _parse_metadata(raw: str | None) -> UploadMetadata:
    if raw is None or not raw.strip():
        return UploadMetadata()
    try:
        return UploadMetadata.model_validate_json(raw)
    except ValidationError as exc:
        # Report problems at their place inside the form field, e.g. body.metadata.channel_roles.
        errors = [{"loc": ("body", "metadata", *err["loc"]), "msg": err["msg"], "type": err["type"]}
                  for err in exc.errors(include_url=False, include_input=False)]
        raise RequestValidationError(errors) from exc


def _store_upload(source: BinaryIO, target: Path, limit: int) -> int:
    """Copy the upload in chunks, counting; past ``limit`` stop at once (the caller removes the file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with target.open("wb") as out:
        while chunk := source.read(COPY_CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=upload_too_large(limit))
            out.write(chunk)
    return size


def _client_filename(name: str | None) -> str:
    # Keep only the last path component a client sent (browsers on Windows send full paths), and
    # no control characters (Postgres text refuses NUL).
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(ch for ch in base if ch.isprintable())[:500]


def _enqueue_ingest(recording_id: uuid.UUID, staged: uuid.UUID) -> None:
    # The message was staged in the outbox with the row: broker down (or this process killed
    # before it gets here), the next sweep sends it.
    outbox.send_staged(staged, INGEST_TASK, [str(recording_id)])


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=RecordingAccepted, responses=UPLOAD_ERRORS,
    summary="Upload a call recording for emotion analysis",
)
def upload_recording(
    session: SessionDep,
    tenant: TenantDep,
    settings: SettingsDep,
    response: Response,
    file: Annotated[UploadFile, File(description="Audio or video: wav, mp3, m4a/aac, ogg/opus, flac, "
                                                 "mp4, webm")],
    metadata: Annotated[str | None, Form(description="JSON object: external_id, channel_roles, "
                                                     "language, metadata")] = None,
    transcript: Annotated[UploadFile | None, File(description=(
        "Optional transcript from your own ASR: JSON (utterances or words with start/end seconds and "
        "speaker or channel) or WebVTT; see docs/TRANSCRIPTS.md"))] = None,
) -> RecordingAccepted:
    meta = _parse_metadata(metadata)
    if meta.external_id is not None:
        existing = queries.get_recording_by_external_id(session, tenant.id, meta.external_id)
        if existing is not None:
            return _accepted(existing, response, status.HTTP_200_OK)

    recording_id = uuid.uuid4()
    media_root = settings.resolved_media_dir
    filename = _client_filename(file.filename)
    target = audio_store.media_path(media_root, tenant.id, recording_id, Path(filename).suffix)
    try:
        size = _store_upload(file.file, target, settings.max_upload_bytes)
        info = decode.probe(target)  # MediaError → its 415/422 (handler in api.main)
        decode.check_duration(info, settings.min_duration_s, settings.max_duration_s)
        decode.check_budget(info, settings.sample_rate, settings.max_decoded_bytes)  # 413 over it
        missing = sorted(int(ch) for ch in meta.channel_roles if int(ch) >= info.channels)
        if missing:
            raise validation_error(
                ("body", "metadata", "channel_roles"),
                f"channel_roles names channel(s) {missing} but the media has {info.channels} channel(s)",
            )
        words = (read_transcript(transcript, ("body", "transcript"), info.duration_s or None, info.channels,
                                 meta.channel_roles) if transcript is not None else None)
        rec, created = queries.add_recording(session, Recording(
            id=recording_id, tenant_id=tenant.id, external_id=meta.external_id, filename=filename,
            media_uri=str(target.resolve()), size_bytes=size, container=info.format_name,
            has_video=info.has_video, channels=info.channels, channel_roles=meta.channel_roles,
            language=meta.language, meta=meta.metadata, duration_s=info.duration_s or None,
            status=RecordingStatus.received.value,
        ))
        if created and words is not None:
            corrections_q.put_transcript(session, rec.id, *words)
        staged = outbox.stage(session, INGEST_TASK, [str(rec.id)]) if created else None
        # Commit BEFORE enqueueing: a worker that takes the message at once must find the row.
        session.commit()
    except BaseException:
        # No row, no file: whatever went wrong, nothing of this upload stays behind.
        audio_store.remove_recording_files(media_root, tenant.id, recording_id)
        raise
    if not created:
        # A concurrent upload with the same external_id won; its file is the one that stays.
        audio_store.remove_recording_files(media_root, tenant.id, recording_id)
        return _accepted(rec, response, status.HTTP_200_OK)
    assert staged is not None
    _enqueue_ingest(rec.id, staged)
    return _accepted(rec, response, status.HTTP_202_ACCEPTED)


def _summary_fields(rec: Recording) -> dict[str, Any]:
    return {
        "id": rec.id, "external_id": rec.external_id, "status": RecordingStatus(rec.status),
        "error": rec.error, "filename": rec.filename, "duration_s": rec.duration_s,
        "channels": rec.channels, "has_video": rec.has_video, "language": rec.language,
        "created_at": rec.created_at, "updated_at": rec.updated_at, "completed_at": rec.completed_at,
        "status_url": _status_url(rec.id),
    }


def tenant_recording(session: Session, tenant: Tenant, recording_id: uuid.UUID) -> Recording:
    rec = queries.get_recording(session, tenant.id, recording_id)
    if rec is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
    return rec


@router.get("/{recording_id}", response_model=RecordingDetail, responses=ERRORS,
            summary="Status, progress and facts of one recording")
def get_recording(session: SessionDep, tenant: TenantDep, recording_id: uuid.UUID) -> RecordingDetail:
    rec = tenant_recording(session, tenant, recording_id)
    counts = queries.role_counts(session, rec.id)
    return RecordingDetail(
        **_summary_fields(rec),
        channel_roles=rec.channel_roles or {}, metadata=rec.meta or {}, size_bytes=rec.size_bytes,
        container=rec.container, timeline_url=f"{_status_url(rec.id)}/timeline",
        disconnected=bool(rec.disconnected),
        # Stored at completion; a call still streaming or being analyzed gets the measures so far.
        conversation=rec.conversation if rec.conversation is not None
        else (conversation.measure_recording(session, rec) if counts else None),
        progress=Progress(segments_done=sum(c.predicted for c in counts),
                          segments_total=sum(c.analyzed for c in counts)),
        role_counts={c.role: RoleCountsOut(segments=c.segments, analyzed=c.analyzed, predicted=c.predicted)
                     for c in counts},
        last_rescore=LastRescore.model_validate(rec.last_rescore) if rec.last_rescore else None,
        media_deleted_at=rec.media_deleted_at,
    )


@router.get("/{recording_id}/timeline", response_model=Timeline, responses=ERRORS,
            summary="Speaker segments in call order with their emotion and reasoning")
def get_timeline(session: SessionDep, tenant: TenantDep, recording_id: uuid.UUID) -> Timeline:
    rec = tenant_recording(session, tenant, recording_id)
    return recording_timeline(session, rec)


def _as_utc(value: datetime | None) -> datetime | None:
    # A datetime without offset is read as UTC, never as the database server's local time.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@router.get("", response_model=RecordingPage, responses={401: ERRORS[401]},
            summary="The tenant's recordings, newest first")
def list_recordings(
    session: SessionDep,
    tenant: TenantDep,
    page: PageDep,
    status_filter: Annotated[RecordingStatus | None, Query(alias="status")] = None,
    created_after: Annotated[datetime | None, Query(description="Inclusive, ISO 8601")] = None,
    created_before: Annotated[datetime | None, Query(description="Exclusive, ISO 8601")] = None,
    external_id: Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00]*$")] = None,
) -> RecordingPage:
    filters = queries.RecordingFilters(
        status=status_filter.value if status_filter else None, created_after=_as_utc(created_after),
        created_before=_as_utc(created_before), external_id=external_id,
    )
    # One row more than asked says whether another page exists without a COUNT.
    rows = queries.list_recordings(session, tenant.id, filters, page.limit + 1, page.after)
    items, more = rows[:page.limit], len(rows) > page.limit
    last = items[-1] if more else None
    return RecordingPage(
        items=[RecordingSummary(**_summary_fields(rec)) for rec in items],
        next_cursor=encode_cursor(last.created_at, last.id) if last is not None else None,
    )


RESCORE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"model": ErrorOut, "description": "The recording is still being analyzed"},
    503: {"model": ErrorOut, "description": "The queue is unreachable; try again"},
}


@router.post("/{recording_id}/rescore", status_code=status.HTTP_202_ACCEPTED, response_model=RescoreAccepted,
             responses=RESCORE_ERRORS,
             summary="Re-run inference with the current model version, keeping older predictions")
def rescore_recording(session: SessionDep, tenant: TenantDep, recording_id: uuid.UUID,
                      body: RescoreIn | None = None) -> RescoreAccepted:
    rec = tenant_recording(session, tenant, recording_id)
    if not RecordingStatus(rec.status).is_final:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"recording is still being analyzed (status {rec.status}); it will finish "
                                   "with the current model version")
    if rec.final_event_at is None:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail="the recording's completion is still being published; try again shortly")
    if rec.media_deleted_at is not None:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail="the recording's media was deleted by the tenant's retention; there is "
                                   "nothing left to run a model on")
    force = body.force if body is not None else False
    rerun_rules = body.rerun_rules if body is not None else False
    try:
        outbox.send(RESCORE_TASK, [str(rec.id), force, rec.analysis_round or 0, rerun_rules])
    except Exception as exc:
        # Nothing changed yet and no sweep would pick a finished recording up: say so now.
        log.warning("could not enqueue rescoring of %s", rec.id, exc_info=True)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            detail="the task queue is unreachable; nothing was changed, try again") from exc
    return RescoreAccepted(recording_id=rec.id, status_url=_status_url(rec.id),
                           timeline_url=f"{_status_url(rec.id)}/timeline", force=force,
                           rerun_rules=rerun_rules)


@router.delete("/{recording_id}", status_code=status.HTTP_204_NO_CONTENT, responses=ERRORS,
               summary="Delete a recording, its segments, predictions and media")
def delete_recording(session: SessionDep, tenant: TenantDep, settings: SettingsDep,
                     recording_id: uuid.UUID) -> Response:
    if not queries.delete_recording(session, tenant.id, recording_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NOT_FOUND)
    # Commit first, then remove the files: a failed commit must not leave a row whose media is gone.
    session.commit()
    audio_store.remove_recording_files(settings.resolved_media_dir, tenant.id, recording_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
