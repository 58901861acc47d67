"""WebSocket /v1/live and /v1/live/twilio: calls streamed in while they happen.

Both endpoints speak to the same LiveCall (api/live_session.py); they differ only in the wire
format. Every refusal is an `error` event with a reason followed by a close code (api/schemas_live),
never a silent drop. Telephony platforms that cannot set headers pass the key as `?api_key=` (or,
for Twilio, as a custom parameter); uvicorn would log the query string, so the filter below blanks
keys out of every log line."""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import re
import uuid
from collections.abc import MutableMapping
from typing import Any

import numpy as np
from anyio import to_thread
from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect, status
from pydantic import ValidationError
from starlette.websockets import WebSocketState

from api.deps import authenticate_key
from api.live_session import LiveCall, TooLong
from api.schemas_live import (
    CLOSE_BAD_DATA,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_BIG,
    CLOSE_TOO_LONG,
    CLOSE_UNAUTHORIZED,
    MAX_FRAME_BYTES,
    LiveStart,
)
from callpulse.settings import Settings, get_settings
from db.queries.tenants import note_key_used, scope_allows
from db.session import transaction
from worker.pipeline.media import live_audio
from worker.stages import live as live_stage

log = logging.getLogger(__name__)

router = APIRouter(tags=["live"])

_KEY_IN_TEXT = re.compile(r"(api_key=)[^&\s\"']+", re.IGNORECASE)


class RedactApiKeys(logging.Filter):
    """Blanks `api_key=...` in log records (uvicorn logs a WebSocket's path with its query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_KEY_IN_TEXT.sub(r"\1***", a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str):
            record.msg = _KEY_IN_TEXT.sub(r"\1***", record.msg)
        return True


def redact_keys_in_logs() -> None:
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn", ""):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactApiKeys) for f in logger.filters):
            logger.addFilter(RedactApiKeys())


class StreamError(Exception):
    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


def _settings(ws: WebSocket) -> Settings:
    override = ws.app.dependency_overrides.get(get_settings)
    return override() if override is not None else get_settings()


def _presented_key(ws: WebSocket) -> str | None:
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return ws.headers.get("x-api-key") or ws.query_params.get("api_key") or None


async def _tenant_of(ws: WebSocket, settings: Settings, key: str | None) -> uuid.UUID:
    if not key:
        raise StreamError("missing API key: send 'Authorization: Bearer <key>', 'X-API-Key: <key>' "
                          "or ?api_key=<key>", CLOSE_UNAUTHORIZED)

    def lookup() -> tuple[uuid.UUID, str] | None:
        with transaction() as s:
            try:
                # The same rate limits as every HTTP route (failed attempts per address, requests per key).
                row = authenticate_key(ws, s, settings, key)
            except HTTPException as exc:
                if exc.status_code == status.HTTP_429_TOO_MANY_REQUESTS:
                    raise StreamError(str(exc.detail), CLOSE_RATE_LIMITED) from None
                return None
            if scope_allows(row.scope, "write"):
                note_key_used(row)
            return row.tenant_id, row.scope

    found = await to_thread.run_sync(lookup)
    if found is None:
        raise StreamError("invalid or revoked API key", CLOSE_UNAUTHORIZED)
    if not scope_allows(found[1], "write"):
        # A stream creates a recording: the same scope as an upload.
        raise StreamError(f"this API key has scope '{found[1]}'; a live stream needs a key with scope "
                          "'write' or 'admin'", CLOSE_FORBIDDEN)
    return found[0]


async def _fail(ws: WebSocket, reason: str, code: int) -> None:
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            await ws.send_json({"event": "error", "reason": reason})
            await ws.close(code, reason[:120])
        except (WebSocketDisconnect, RuntimeError):
            pass


def _open_and_hold(tenant_id: uuid.UUID, spec: live_stage.LiveSpec, settings: Settings) -> live_stage.Opened:
    """The call's row, then this process's lease on it: if the process dies mid-call, the lease runs
    out within CALLPULSE_LEASE_TTL_S and the sweep finishes the call, instead of the backstop."""
    from worker.jobs import lease

    opened = live_stage.open_call(tenant_id, spec, settings)
    try:
        lease_ids = lease.claim_for("live", opened.recording_id, lease.api_node())
    except Exception:
        log.warning("no lease on live recording %s: if this process dies mid-call, the backstop sweep "
                    "finishes it", opened.recording_id, exc_info=True)
        lease_ids = []
    return dataclasses.replace(opened, lease_ids=tuple(lease_ids))


async def _open(tenant_id: uuid.UUID, spec: live_stage.LiveSpec, settings: Settings) -> live_stage.Opened:
    try:
        return await to_thread.run_sync(_open_and_hold, tenant_id, spec, settings)
    except live_stage.Refused as exc:
        raise StreamError(exc.reason, exc.code) from exc


@router.websocket("/v1/live")
async def live(ws: WebSocket) -> None:
    await ws.accept()
    settings = _settings(ws)
    call: LiveCall | None = None
    stopped = False
    try:
        tenant_id = await _tenant_of(ws, settings, _presented_key(ws))
        start = _parse_start(await _first_text(ws))
        spec = live_stage.LiveSpec(channels=start.channels, channel_roles=start.channel_roles,
                                   external_id=start.external_id, metadata=start.metadata)
        call = LiveCall(settings, await _open(tenant_id, spec, settings), ws.send_json)
        fmt = live_audio.Format(start.encoding, start.sample_rate, start.channels)
        decoder = live_audio.FrameDecoder(fmt)
        await ws.send_json({"event": "started", "recording_id": str(call.recording_id)})
        call.start_pump()
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                frame = message["bytes"]
                if len(frame) > MAX_FRAME_BYTES:
                    raise StreamError(f"a binary message of {len(frame)} bytes is over the limit of "
                                      f"{MAX_FRAME_BYTES}", CLOSE_TOO_BIG)
                await call.audio(_decode(decoder, frame))
                continue
            event = _event_of(message.get("text") or "")
            if event == "stop":
                stopped = True
                break
            raise StreamError(f"unexpected event '{event}': after start, send binary audio and then "
                              "{\"event\": \"stop\"}", CLOSE_PROTOCOL)
    except WebSocketDisconnect:
        pass
    except StreamError as exc:
        await _fail(ws, exc.reason, exc.code)
    except TooLong as exc:
        await _fail(ws, str(exc), CLOSE_TOO_LONG)
    except Exception:
        log.exception("live stream failed")
        await _fail(ws, "internal error; the audio received so far is analyzed", CLOSE_INTERNAL)
    if call is None:
        return
    await call.stop_pump()
    try:
        await call.end(disconnected=not stopped)
    except Exception:
        log.exception("could not finish live recording %s; the sweep finishes it", call.recording_id)
    if not stopped:
        return
    try:
        await call.drain()
        await ws.send_json({"event": "stopped", "recording_id": str(call.recording_id)})
        await ws.close(CLOSE_NORMAL)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client left after its stop: the recording finishes all the same


def _decode(decoder: live_audio.FrameDecoder, frame: bytes) -> list[np.ndarray]:
    try:
        return decoder.decode(frame)
    except live_audio.BadFrame as exc:
        raise StreamError(str(exc), CLOSE_BAD_DATA) from exc


async def _first_text(ws: WebSocket) -> str:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is None:
        raise StreamError("the first message must be the start event (text JSON), not audio", CLOSE_PROTOCOL)
    return str(message["text"])


def _event_of(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise StreamError("a text message is not JSON", CLOSE_PROTOCOL) from exc
    if not isinstance(body, dict) or not isinstance(body.get("event"), str):
        raise StreamError("a text message has no \"event\" field", CLOSE_PROTOCOL)
    return str(body["event"])


def _parse_start(text: str) -> LiveStart:
    try:
        return LiveStart.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise StreamError(f"invalid start event: {where}: {first['msg']}", CLOSE_PROTOCOL) from exc


# --- Twilio Media Streams ---------------------------------------------------------------------

TWILIO_CHANNEL = {"outbound": 0, "inbound": 1}


@router.websocket("/v1/live/twilio")
async def live_twilio(ws: WebSocket) -> None:
    """Twilio's <Stream> messages: connected, start (streamSid, tracks, customParameters), media
    (base64 8 kHz μ-law per track), mark, stop. Twilio reads nothing we send on this socket, so
    only errors are sent (before the close); segments and alerts reach integrations by webhook."""
    await ws.accept()
    settings = _settings(ws)
    call: LiveCall | None = None
    stopped = False
    try:
        start = await _twilio_start(ws)
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise StreamError("start.customParameters must be an object", CLOSE_PROTOCOL)
        tenant_id = await _tenant_of(ws, settings, _presented_key(ws) or params.get("api_key"))
        roles = {"0": str(params.get("outbound_role") or "agent").strip().lower(),
                 "1": str(params.get("inbound_role") or "customer").strip().lower()}
        metadata = {k: v for k, v in params.items() if k not in ("api_key", "external_id")}
        metadata["twilio"] = {k: start.get(k) for k in ("streamSid", "callSid", "accountSid") if start.get(k)}
        spec = _twilio_spec(roles, params.get("external_id"), metadata)
        call = LiveCall(settings, await _open(tenant_id, spec, settings), None)
        tracks = [t for t in (start.get("tracks") or ["inbound"]) if t in TWILIO_CHANNEL]
        upsamplers = {name: live_audio.Upsampler() for name in TWILIO_CHANNEL}
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            body = _twilio_message(message)
            event = body.get("event")
            if event == "media":
                await call.audio(_twilio_media(body, tracks, upsamplers))
            elif event == "stop":
                stopped = True
                break
            elif event not in ("mark", "connected", "dtmf"):
                raise StreamError(f"unexpected Twilio event '{event}'", CLOSE_PROTOCOL)
    except WebSocketDisconnect:
        pass
    except StreamError as exc:
        await _fail(ws, exc.reason, exc.code)
    except TooLong as exc:
        await _fail(ws, str(exc), CLOSE_TOO_LONG)
    except Exception:
        log.exception("Twilio live stream failed")
        await _fail(ws, "internal error; the audio received so far is analyzed", CLOSE_INTERNAL)
    if call is None:
        return
    try:
        await call.end(disconnected=not stopped)
    except Exception:
        log.exception("could not finish live recording %s; the sweep finishes it", call.recording_id)
    if stopped:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.close(CLOSE_NORMAL)


def _twilio_message(message: MutableMapping[str, Any]) -> dict[str, Any]:
    if message.get("text") is None:
        raise StreamError("Twilio Media Streams send JSON text messages; got binary", CLOSE_PROTOCOL)
    try:
        body = json.loads(message["text"])
    except ValueError as exc:
        raise StreamError("a message is not JSON", CLOSE_PROTOCOL) from exc
    if not isinstance(body, dict):
        raise StreamError("a message is not a JSON object", CLOSE_PROTOCOL)
    return body


async def _twilio_start(ws: WebSocket) -> dict[str, Any]:
    """Skip `connected`; the first other message must be `start`."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        body = _twilio_message(message)
        if body.get("event") == "connected":
            continue
        if body.get("event") != "start" or not isinstance(body.get("start"), dict):
            raise StreamError("the first Twilio event after connected must be start", CLOSE_PROTOCOL)
        start = dict(body["start"])
        start.setdefault("streamSid", body.get("streamSid"))
        fmt = start.get("mediaFormat") or {}
        if fmt and (fmt.get("encoding") != "audio/x-mulaw" or int(fmt.get("sampleRate", 8000)) != 8000):
            raise StreamError("only Twilio's audio/x-mulaw at 8000 Hz is supported", CLOSE_PROTOCOL)
        return start


def _twilio_spec(roles: dict[str, str], external_id: Any, metadata: dict[str, Any]) -> live_stage.LiveSpec:
    try:
        checked = LiveStart.model_validate({"event": "start", "encoding": "mulaw", "sample_rate": 8000,
                                            "channels": 2, "channel_roles": roles, "metadata": metadata,
                                            "external_id": external_id or None})
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise StreamError(f"invalid customParameters: {where}: {first['msg']}", CLOSE_PROTOCOL) from exc
    return live_stage.LiveSpec(channels=2, channel_roles=checked.channel_roles,
                               external_id=checked.external_id, metadata=checked.metadata,
                               container="twilio")


def _twilio_media(body: dict[str, Any], tracks: list[str], upsamplers: dict[str, live_audio.Upsampler]
                  ) -> list[np.ndarray]:
    media = body.get("media")
    if not isinstance(media, dict):
        raise StreamError("a media event without its media object", CLOSE_PROTOCOL)
    track = media.get("track", "inbound")
    if track not in TWILIO_CHANNEL:
        raise StreamError(f"unknown track '{track}' (inbound or outbound)", CLOSE_PROTOCOL)
    try:
        payload = base64.b64decode(str(media.get("payload", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise StreamError("a media payload is not base64", CLOSE_BAD_DATA) from exc
    try:
        samples = live_audio.decode_mulaw_track(payload, upsamplers[track])
    except live_audio.BadFrame as exc:
        raise StreamError(str(exc), CLOSE_BAD_DATA) from exc
    out = [np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32)]
    out[TWILIO_CHANNEL[track]] = samples
    if track in tracks and len(tracks) == 1:
        # A single-track stream: the other channel is silence, so the file stays aligned.
        out[1 - TWILIO_CHANNEL[track]] = np.zeros_like(samples)
    return out
