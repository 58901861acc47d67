"""Words on a live call, as the call goes on: a real `callpulse api` and a real worker with ASR on
(the bundled Whisper-base, as deployed); the customer's segment events carry the words heard in
them before `stop`, a `words` rule fires on them during the call, and the finished call's timeline
has the same words from its `asr` transcript.
The example call's customer reads a public text (the Rainbow Passage), so the words can be checked."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from tests.live_support import Api, Received, drain, pcm16, read_until_closed, running_api, stream
from tests.support import EXAMPLE, running_worker

START = {"event": "start", "encoding": "pcm_s16le", "sample_rate": 16000, "channels": 2,
         "channel_roles": {"0": "agent", "1": "customer"}}
ASR_ON = {"CALLPULSE_ASR_ENABLED": "true", "CALLPULSE_LIVE_ASR_ENABLED": "true"}


@pytest.fixture(scope="module")
def api(broker: str) -> Iterator[Api]:
    with running_api(ASR_ON) as server:
        yield server


@pytest.fixture(scope="module")
def worker(broker: str) -> Iterator[None]:
    with running_worker("live-words", env=ASR_ON, timeout_s=180):
        yield


def _customer_words(got: Received) -> bool:
    return any(m["role"] == "customer" and m["words"] for m in got.of("segment"))


def _said(event: dict[str, Any]) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", w["text"].lower()).strip() for w in event["words"])


def test_live_segments_carry_their_words(api: Api, worker: None, make_tenant) -> None:
    _, key = make_tenant(["customer"])
    # A rule on what the customer says: with words heard live, it fires while the call goes on.
    rule = {"name": "Said arch", "definition": {"roles": ["customer"], "when": {"words": {"any": ["arch"]}}}}
    assert httpx.post(f"{api.base}/v1/rules", headers={"X-API-Key": key}, json=rule).status_code == 201
    call = pcm16(EXAMPLE)
    got = Received()
    with connect(f"{api.ws}/v1/live", additional_headers={"X-API-Key": key}) as ws:
        ws.send(json.dumps(START))
        drain(ws, got, timeout=30)
        rec_id = got.messages[0]["recording_id"]
        stream(ws, call, got, speed=5.0)
        deadline = time.monotonic() + 180
        while not (_customer_words(got) and got.of("alert")):
            assert time.monotonic() < deadline, got.messages
            drain(ws, got, timeout=0.5)
        assert got.of("alert")[0]["rule_name"] == "Said arch"  # before stop
        ws.send(json.dumps({"event": "stop"}))
        read_until_closed(ws, got, timeout=240)
    assert got.close_code == 1000

    customer = [m for m in got.of("segment") if m["role"] == "customer"]
    first = customer[0]
    assert first["words"], customer
    # The first customer turn reads "these take the shape of a long round arch ...".
    heard = _said(first)
    assert sum(w in heard.split() for w in ("take", "shape", "long", "round", "arch")) >= 3, heard
    for word in first["words"]:
        assert first["start_s"] - 0.5 <= word["start_s"] <= word["end_s"] <= first["end_s"] + 0.5
    agent = [m for m in got.of("segment") if m["role"] == "agent"]
    assert agent and all(m["label"] is None for m in agent)  # policy: the agent is not analyzed

    deadline = time.monotonic() + 120
    while (body := httpx.get(f"{api.base}/v1/recordings/{rec_id}", headers={"X-API-Key": key},
                             timeout=10).json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, body
        time.sleep(0.5)
    assert body["status"] == "done"
    timeline = httpx.get(f"{api.base}/v1/recordings/{rec_id}/timeline", headers={"X-API-Key": key},
                         timeout=10).json()
    assert timeline["transcript_source"] == "asr"
    stored = {s["id"]: s for s in timeline["segments"]}
    for event in customer:
        assert [w["text"] for w in stored[event["id"]]["words"]] == [w["text"] for w in event["words"]]
    # Each customer turn was transcribed once: no utterance twice.
    texts = [w["start_s"] for s in timeline["segments"] for w in s["words"]]
    assert len(texts) == len(set(np.round(texts, 3)))
