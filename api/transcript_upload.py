"""Reading an uploaded transcript (with the recording or later) into storable rows."""

from __future__ import annotations

from typing import Any, cast

from fastapi import HTTPException, UploadFile, status

from api.deps import validation_error
from api.offload import run_bounded
from api.schemas_quality import TranscriptOut, UtteranceOut, WordOut
from db.models import Transcript
from worker.pipeline.text import transcript

# Up to this size a transcript parses in milliseconds, cheaper than starting a parser process.
INLINE_PARSE_BYTES = 64 * 1024


def read_transcript(upload: UploadFile, where: tuple[str, ...], duration_s: float | None, channels: int,
                    channel_roles: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """Parse an uploaded transcript into storable rows, or raise the 413/422 that says why not.

    A speaker named like a channel's role ("customer") or speaker ("ch1") is placed on that channel,
    so its words land on that channel's segments."""
    data = upload.file.read(transcript.MAX_INPUT_BYTES + 1)
    if len(data) > transcript.MAX_INPUT_BYTES:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                            detail=f"transcript larger than {transcript.MAX_INPUT_BYTES} bytes")
    args = (data, upload.filename, upload.content_type, duration_s, channels, channel_roles)
    # A big transcript is seconds of pure-Python parsing: in a parser process (api/offload.py).
    ok, value = transcript_rows_result(*args) if len(data) <= INLINE_PARSE_BYTES else run_bounded(
        transcript_rows_result, *args)
    if not ok:
        raise validation_error(where, value)
    return cast(tuple[str, list[dict[str, Any]]], value)


def transcript_rows_result(*args: Any) -> tuple[bool, Any]:
    """transcript_rows as plain data, for a parser process: (True, (format, rows)) or (False, reason)."""
    try:
        return True, transcript_rows(*args)
    except transcript.TranscriptError as exc:
        return False, exc.reason


def transcript_rows(data: bytes, filename: str | None, content_type: str | None, duration_s: float | None,
                    channels: int, channel_roles: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """(format, rows to store); TranscriptError when the transcript is unusable."""
    fmt, utterances = transcript.parse_with_format(
        data, filename=filename, content_type=content_type, duration_s=duration_s, channels=channels)
    roles = list(channel_roles.values())
    # A role names a channel only when it is that channel's alone; shared roles go by "customer_1".
    by_name = {role: int(ch) for ch, role in channel_roles.items() if roles.count(role) == 1}
    by_name.update({f"{role}_{ch}": int(ch) for ch, role in channel_roles.items()})
    # Segment speakers are the role, or speaker_N for channel N without one; chN is accepted too.
    by_name.update({f"speaker_{ch}": ch for ch in range(channels)})
    by_name.update({f"ch{ch}": ch for ch in range(channels)})
    placed = [transcript.on_channel(u, by_name.get((u.speaker or "").strip().lower())) for u in utterances]
    return fmt, transcript.to_rows(placed)


def transcript_out(row: Transcript) -> TranscriptOut:
    return TranscriptOut(
        recording_id=row.recording_id, source=row.source, format=row.format, created_at=row.created_at,
        utterances=[UtteranceOut(
            start_s=u.start_s, end_s=u.end_s, text=u.text, speaker=u.speaker, channel=u.channel,
            words=[WordOut.build(w) for w in u.words], language=u.language,
        ) for u in transcript.from_rows(row.utterances)],
    )
