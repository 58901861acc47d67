"""/v1/recordings/{id}/transcript: the client's own transcript (JSON or WebVTT), stored with the
call; its words feed the text model and show beside each segment on the timeline."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, UploadFile, status

from api.deps import SessionDep, TenantDep
from api.routes.recordings import ERRORS, tenant_recording
from api.schemas_quality import TranscriptOut
from api.transcript_upload import read_transcript, transcript_out
from db.queries import corrections as queries

router = APIRouter(prefix="/v1/recordings", tags=["recordings"])

TRANSCRIPT_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    413: {"description": "Transcript larger than the limit"},
    422: {"description": "Not a transcript, or one whose times overlap, run past the end of the "
                         "recording or are not valid UTF-8 text (the detail says which and where)"},
}


@router.put("/{recording_id}/transcript", response_model=TranscriptOut, responses=TRANSCRIPT_ERRORS,
            summary="Attach or replace the call's transcript (JSON or WebVTT)")
def put_transcript(
    session: SessionDep, tenant: TenantDep, recording_id: uuid.UUID,
    transcript_file: Annotated[UploadFile, File(alias="transcript", description=(
        "JSON ({\"utterances\": [{start, end, text, speaker|channel, words?}]}, {\"words\": [...]}, "
        "Whisper-style {\"segments\": [...]}) or WebVTT with <v Speaker> voice tags"))],
) -> TranscriptOut:
    rec = tenant_recording(session, tenant, recording_id)
    fmt, rows = read_transcript(transcript_file, ("body", "transcript"), rec.duration_s, rec.channels,
                                rec.channel_roles or {})
    row = queries.put_transcript(session, rec.id, fmt, rows)
    session.commit()
    # Predictions already made did not see these words: POST .../rescore {"force": true} re-runs them.
    return transcript_out(row)


@router.get("/{recording_id}/transcript", response_model=TranscriptOut, responses=ERRORS,
            summary="The call's stored transcript")
def get_transcript(session: SessionDep, tenant: TenantDep, recording_id: uuid.UUID) -> TranscriptOut:
    rec = tenant_recording(session, tenant, recording_id)
    row = queries.get_transcript(session, rec.id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="this recording has no transcript")
    return transcript_out(row)
