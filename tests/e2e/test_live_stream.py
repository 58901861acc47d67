"""Live calls end to end: a real `callpulse api` (uvicorn) and a real Celery worker on Redis and
Postgres; clients stream a real stereo call faster than real time over WebSockets."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.live_support import Api, Received, drain, pcm16, read_until_closed, running_api, stream
from tests.support import EXAMPLE, running_worker

START = {"event": "start", "encoding": "pcm_s16le", "sample_rate": 16000, "channels": 2,
         "channel_roles": {"0": "agent", "1": "customer"}}


@pytest.fixture(scope="module")
def api(database: str, broker: str) -> Iterator[Api]:
    with running_api({"CALLPULSE_LIVE_MAX_STREAMS_PER_TENANT": "2",
                      "CALLPULSE_LIVE_MAX_DURATION_S": "60"}) as server:
        yield server


@pytest.fixture(scope="module")
def worker(database: str, broker: str) -> Iterator[None]:
    with running_worker("live"):
        yield


@pytest.fixture(scope="module")
def call() -> np.ndarray:
    return pcm16(EXAMPLE)  # 36 s stereo of real speech: agent on channel 0, customer on 1


def _recording(api: Api, key: str, rec_id: str) -> httpx.Response:
    return httpx.get(f"{api.base}/v1/recordings/{rec_id}", headers={"X-API-Key": key}, timeout=10)


def _wait_done(api: Api, key: str, rec_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = _recording(api, key, rec_id).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.3)
    raise AssertionError(f"recording {rec_id} did not finish: {body}")


def _timeline(api: Api, key: str, rec_id: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{api.base}/v1/recordings/{rec_id}/timeline", headers={"X-API-Key": key}, timeout=10)
    return list(r.json()["segments"])


def test_live_call_analyzed_while_streaming(api: Api, worker: None, call: np.ndarray, make_tenant) -> None:
    _, key = make_tenant(["customer"])
    rule = {"name": "every customer turn", "definition": {
        "roles": ["customer"], "when": {"probability": {"label": "neutral", "min": 0.0}}}}
    assert httpx.post(f"{api.base}/v1/rules", headers={"X-API-Key": key}, json=rule).status_code == 201

    got = Received()
    with connect(f"{api.ws}/v1/live?api_key={key}") as ws:
        ws.send(json.dumps({**START, "external_id": "live-1", "metadata": {"agent": "ann"}}))
        drain(ws, got, timeout=30)
        assert got.messages[0]["event"] == "started"
        rec_id = got.messages[0]["recording_id"]
        stream(ws, call, got, speed=5.0)
        assert _recording(api, key, rec_id).json()["status"] == "live"
        # Still connected: wait (bounded) for the first analyzed customer turn and its alert.
        deadline = time.monotonic() + 90
        while not (any(m.get("label") for m in got.of("segment")) and got.of("alert")):
            assert time.monotonic() < deadline, got.messages
            drain(ws, got, timeout=0.5)
        before_stop = len(got.messages)
        ws.send(json.dumps({"event": "stop"}))
        read_until_closed(ws, got)
    assert got.close_code == 1000
    assert got.messages[-1] == {"event": "stopped", "recording_id": rec_id}
    assert before_stop >= 3

    segments = got.of("segment")
    customer = [m for m in segments if m["role"] == "customer"]
    agent = [m for m in segments if m["role"] == "agent"]
    assert customer and agent
    assert all(m["label"] and m["scores"] and m["valence"] is not None for m in customer)
    assert all(m["label"] is None and m["skip_reason"] for m in agent)  # policy: customers only
    alert = got.of("alert")[0]
    assert alert["recording_id"] == rec_id and alert["rule_name"] == "every customer turn"

    body = _wait_done(api, key, rec_id)
    assert body["status"] == "done" and body["disconnected"] is False
    assert body["external_id"] == "live-1" and body["metadata"] == {"agent": "ann"}
    assert abs(body["duration_s"] - call.shape[0] / 16000) < 0.05
    timeline = _timeline(api, key, rec_id)
    assert sorted(m["id"] for m in segments) == sorted(s["id"] for s in timeline)

    # The same audio uploaded as a recording: the batch analysis finds the same segments.
    wav = api.log_path.parent / "call.wav"
    import wave
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(call.astype("<i2").tobytes())
    with wav.open("rb") as fh:
        r = httpx.post(f"{api.base}/v1/recordings", headers={"X-API-Key": key}, timeout=30,
                       files={"file": ("call.wav", fh, "audio/wav")},
                       data={"metadata": json.dumps({"channel_roles": START["channel_roles"]})})
    assert r.status_code == 202, r.text
    _wait_done(api, key, r.json()["id"])
    batch = _timeline(api, key, r.json()["id"])
    assert len(batch) == len(timeline)
    for live_seg, batch_seg in zip(timeline, batch, strict=True):
        assert live_seg["channel"] == batch_seg["channel"]
        assert abs(live_seg["start_s"] - batch_seg["start_s"]) <= 0.2
        assert abs(live_seg["end_s"] - batch_seg["end_s"]) <= 0.2

    # Another tenant's key finds nothing; the key passed in the URL never reached the log.
    _, other = make_tenant()
    assert _recording(api, other, rec_id).status_code == 404
    assert key not in api.log() and "api_key=***" in api.log()


def test_dropped_socket_is_analyzed_and_marked(api: Api, worker: None, call: np.ndarray, make_tenant) -> None:
    _, key = make_tenant(["customer"])
    got = Received()
    ws = connect(f"{api.ws}/v1/live", additional_headers={"Authorization": f"Bearer {key}"})
    ws.send(json.dumps(START))
    drain(ws, got, timeout=30)
    rec_id = got.messages[0]["recording_id"]
    half = call[: 20 * 16000]
    stream(ws, half, got, speed=20.0)
    ws.socket.close()  # the TCP connection drops: no stop, no close frame
    body = _wait_done(api, key, rec_id)
    assert body["status"] == "done" and body["disconnected"] is True
    assert abs(body["duration_s"] - 20.0) < 0.05
    timeline = _timeline(api, key, rec_id)
    assert {s["role"] for s in timeline} == {"agent", "customer"}
    assert all(s["end_s"] <= 20.0 for s in timeline)
    assert any(s["label"] for s in timeline if s["role"] == "customer")


def _refused(api: Api, path: str, first: str | bytes | None, headers: dict[str, str] | None = None,
             then: list[str | bytes] | None = None) -> Received:
    got = Received()
    with connect(f"{api.ws}{path}", additional_headers=headers or {}) as ws:
        try:
            if first is not None:
                ws.send(first)
            for message in then or []:
                drain(ws, got, timeout=5)
                ws.send(message)
        except ConnectionClosed:
            pass  # refused before everything was sent: what the server said is still buffered
        read_until_closed(ws, got, timeout=30)
    return got


def test_over_limit_tenant_is_refused(api: Api, make_tenant) -> None:
    _, key = make_tenant()
    _, other_key = make_tenant()
    open_ones = []
    try:
        for _ in range(2):  # CALLPULSE_LIVE_MAX_STREAMS_PER_TENANT=2 for this server
            ws = connect(f"{api.ws}/v1/live", additional_headers={"X-API-Key": key})
            ws.send(json.dumps(START))
            assert json.loads(ws.recv(timeout=30))["event"] == "started"
            open_ones.append(ws)
        got = _refused(api, "/v1/live", json.dumps(START), {"X-API-Key": key})
        assert got.close_code == 4429
        assert "live streams open" in got.of("error")[0]["reason"]
        # The limit is per tenant: another tenant still streams.
        with connect(f"{api.ws}/v1/live", additional_headers={"X-API-Key": other_key}) as ws:
            ws.send(json.dumps(START))
            assert json.loads(ws.recv(timeout=30))["event"] == "started"
    finally:
        for ws in open_ones:
            ws.close()


def test_bad_input_gets_a_reason_and_a_close_code(api: Api, call: np.ndarray, make_tenant) -> None:
    tenant_id, key = make_tenant()
    auth = {"X-API-Key": key}
    from db.queries.tenants import create_api_key
    from db.session import transaction

    with transaction() as s:
        _, read_key = create_api_key(s, tenant_id, "reader", scope="read")
    noise = np.random.default_rng(0).integers(-32768, 32767, 6400).astype("<i2").tobytes()
    cases: list[tuple[dict[str, str], str | bytes, list[str | bytes], int, str]] = [
        ({}, json.dumps(START), [], 4401, "missing API key"),
        ({"X-API-Key": "cp_not-a-key"}, json.dumps(START), [], 4401, "invalid or revoked"),
        ({"X-API-Key": read_key}, json.dumps(START), [], 4403, "scope 'read'"),
        (auth, call[:1600].tobytes(), [], 1008, "first message must be the start event"),
        (auth, json.dumps({**START, "sample_rate": 44100}), [], 1008, "sample_rate"),
        (auth, json.dumps({**START, "channel_roles": {"2": "customer"}}), [], 1008, "channel 2"),
        (auth, json.dumps(START), [noise], 1003, "full-scale noise"),
        (auth, json.dumps(START), [b"\x00\x01\x02"], 1003, "not a whole number"),
        (auth, json.dumps(START), [bytes(70_000)], 1009, "over the limit"),
        (auth, json.dumps(START), ["{\"event\": \"pause\"}"], 1008, "unexpected event 'pause'"),
    ]
    for headers, first, then, code, reason in cases:
        got = _refused(api, "/v1/live", first, headers, then)
        assert got.close_code == code, (reason, got)
        assert reason in got.of("error")[0]["reason"], (reason, got)


def test_a_call_over_the_duration_limit_ends_there(api: Api, worker: None, call: np.ndarray,
                                                   make_tenant) -> None:
    _, key = make_tenant(["customer"])
    got = Received()
    with connect(f"{api.ws}/v1/live", additional_headers={"X-API-Key": key}) as ws:
        ws.send(json.dumps(START))
        drain(ws, got, timeout=30)
        with contextlib.suppress(ConnectionClosed):  # refused mid-stream: what it said is buffered
            stream(ws, np.concatenate([call, call]), got, chunk_s=0.5, speed=50.0)  # 72 s; limit 60 s
        read_until_closed(ws, got)
    assert got.close_code == 4413
    assert "longer than the limit of 60 s" in got.of("error")[0]["reason"]
    body = _wait_done(api, key, got.of("started")[0]["recording_id"])
    assert body["status"] == "done" and body["disconnected"] is True
    assert 59.0 <= body["duration_s"] <= 60.5


def _twilio_messages(call: np.ndarray, key: str) -> list[str]:
    """What Twilio sends for a <Stream track="both_tracks"> with <Parameter>s: connected, start,
    20 ms media messages per track (8 kHz μ-law, base64), a mark, stop."""
    import subprocess

    sid = "MZ18ad3ab5a668481ce02b83e7395059f0"
    stereo = call.astype("<i2").tobytes()
    mulaw = subprocess.run(["ffmpeg", "-v", "error", "-f", "s16le", "-ar", "16000", "-ac", "2", "-i", "-",
                            "-ar", "8000", "-f", "mulaw", "-"], input=stereo, check=True,
                           capture_output=True).stdout
    frames = np.frombuffer(mulaw, dtype=np.uint8).reshape(-1, 2)
    out = [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
           json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
               "streamSid": sid, "accountSid": "AC123", "callSid": "CA123",
               "tracks": ["inbound", "outbound"],
               "customParameters": {"api_key": key, "external_id": "twilio-1", "queue": "billing"},
               "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})]
    seq = 2
    for chunk, i in enumerate(range(0, frames.shape[0], 160)):
        for track, column in (("inbound", 1), ("outbound", 0)):  # customer on channel 1 of the call
            payload = base64.b64encode(frames[i: i + 160, column].tobytes()).decode()
            out.append(json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": sid, "media": {
                "track": track, "chunk": str(chunk + 1), "timestamp": str(chunk * 20), "payload": payload}}))
            seq += 1
    out.append(json.dumps({"event": "mark", "sequenceNumber": str(seq), "streamSid": sid,
                           "mark": {"name": "greeting"}}))
    out.append(json.dumps({"event": "stop", "sequenceNumber": str(seq + 1), "streamSid": sid,
                           "stop": {"accountSid": "AC123", "callSid": "CA123"}}))
    return out


def test_twilio_media_stream(api: Api, worker: None, call: np.ndarray, make_tenant) -> None:
    _, key = make_tenant(["customer"])
    messages = _twilio_messages(call, key)
    got = Received()
    with connect(f"{api.ws}/v1/live/twilio") as ws:
        for message in messages:
            ws.send(message)
        read_until_closed(ws, got, timeout=60)
    assert got.close_code == 1000 and not got.of("error")
    listing = httpx.get(f"{api.base}/v1/recordings", params={"external_id": "twilio-1"},
                        headers={"X-API-Key": key}).json()["items"]
    assert len(listing) == 1
    body = _wait_done(api, key, listing[0]["id"])
    assert body["status"] == "done" and body["disconnected"] is False
    assert body["channel_roles"] == {"0": "agent", "1": "customer"}
    assert body["metadata"]["queue"] == "billing" and body["metadata"]["twilio"]["callSid"] == "CA123"
    assert "api_key" not in body["metadata"]
    assert abs(body["duration_s"] - call.shape[0] / 16000) < 0.1
    timeline = _timeline(api, key, listing[0]["id"])
    customer = [s for s in timeline if s["role"] == "customer"]
    assert customer and all(s["channel"] == 1 and s["label"] for s in customer)
    assert any(s["role"] == "agent" and s["channel"] == 0 for s in timeline)
    assert key not in api.log()


def test_api_key_in_the_url_never_reaches_the_log(api: Api, make_tenant) -> None:
    """Keys in the query string of refused streams, of the Twilio route, of plain HTTP requests to
    the stream routes and to the rest of /v1 are blanked in the access and application logs."""
    tenant_id, key = make_tenant()
    from db.queries.tenants import create_api_key
    from db.session import transaction

    with transaction() as s:
        _, read_key = create_api_key(s, tenant_id, "reader", scope="read")
    unknown = "cp_" + "x" * 40
    got = _refused(api, f"/v1/live?api_key={unknown}", json.dumps(START))
    assert got.close_code == 4401
    got = _refused(api, f"/v1/live?api_key={read_key}", json.dumps(START))
    assert got.close_code == 4403
    got = _refused(api, f"/v1/live?api_key={key}", b"\x00\x01")  # accepted key, then a refused frame
    assert got.close_code == 1008
    got = _refused(api, f"/v1/live/twilio?api_key={key}", "not json")
    assert got.of("error")
    for path in (f"/v1/live?api_key={key}", f"/v1/live/twilio?api_key={read_key}",
                 f"/v1/recordings?api_key={key}", f"/dashboard/recordings?x=1&api_key={key}"):
        assert httpx.get(f"{api.base}{path}", timeout=10).status_code < 500
    time.sleep(0.5)  # the access log is written after the response
    log = api.log()
    assert "api_key=***" in log
    for secret in (key, read_key, unknown):
        assert secret not in log


def test_twilio_roles_from_parameters_and_bad_media(api: Api, worker: None, make_tenant) -> None:
    """`inbound_role` / `outbound_role` in customParameters name the channels; a media payload that
    is not base64 ends the stream with a reason and a close code, and what arrived is kept."""
    _, key = make_tenant()
    sid = "MZ00000000000000000000000000000001"
    silence = base64.b64encode(b"\xff" * 160).decode()  # 20 ms of μ-law silence
    messages = [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
                json.dumps({"event": "start", "streamSid": sid, "start": {
                    "streamSid": sid, "callSid": "CA9", "tracks": ["inbound", "outbound"],
                    "customParameters": {"api_key": key, "external_id": "twilio-roles",
                                         "inbound_role": "Agent", "outbound_role": "customer"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})]
    for chunk in range(50):  # one second of both tracks
        for track in ("inbound", "outbound"):
            messages.append(json.dumps({"event": "media", "streamSid": sid, "media": {
                "track": track, "chunk": str(chunk + 1), "timestamp": str(chunk * 20), "payload": silence}}))
    messages.append(json.dumps({"event": "media", "streamSid": sid, "media": {
        "track": "inbound", "chunk": "51", "timestamp": "1000", "payload": "%%% not base64 %%%"}}))
    got = Received()
    with connect(f"{api.ws}/v1/live/twilio") as ws:
        with contextlib.suppress(ConnectionClosed):
            for message in messages:
                ws.send(message)
        read_until_closed(ws, got, timeout=30)
    assert got.close_code == 1003 and "not base64" in got.of("error")[0]["reason"]
    listing = httpx.get(f"{api.base}/v1/recordings", params={"external_id": "twilio-roles"},
                        headers={"X-API-Key": key}).json()["items"]
    assert len(listing) == 1
    body = _wait_done(api, key, listing[0]["id"])
    assert body["channel_roles"] == {"0": "customer", "1": "agent"}  # outbound is channel 0
    assert body["status"] == "done" and body["disconnected"] is True
    assert abs(body["duration_s"] - 1.0) < 0.05
