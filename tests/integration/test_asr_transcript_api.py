"""GET /v1/recordings/{id}/transcript with our own words: the bundled Whisper-base (run for real)
transcribes a call that came without a transcript, through the stages the ingest and asr queues
run, and the endpoint serves that transcript exactly as it serves a client's upload (same fields,
`source` saying where the words came from), with real words and their times, to the call's tenant
only."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from fastapi.testclient import TestClient

from callpulse.settings import get_settings
from db.models import Recording
from db.session import transaction
from worker.stages import asr as asr_stage
from worker.stages import ingest


def _recording(tenant_id: uuid.UUID, media: Path) -> uuid.UUID:
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename=media.name, media_uri=str(media),
                        channel_roles={"0": "customer", "1": "agent"})
        s.add(rec)
        s.flush()
        return rec.id


def _keys(body: dict) -> tuple[set[str], set[str], set[str]]:
    utterances = body["utterances"]
    words = [w for u in utterances for w in u["words"]]
    return set(body), {k for u in utterances for k in u}, {k for w in words for k in w}


def test_asr_transcript_is_served_like_an_uploaded_one(make_tenant, stereo_call: Path) -> None:
    # The product default: ASR on, the bundled model (no other model path).
    settings = get_settings().model_copy(update={"asr_enabled": True, "asr_model_path": None})
    tenant_id, key = make_tenant(["customer"])
    _, other_key = make_tenant(["customer"])
    rec_id = _recording(tenant_id, stereo_call)
    assert ingest.ingest(rec_id, settings).transcribe == [rec_id], "no transcript came: ours is made"
    asr_stage.transcribe_recording(rec_id, settings)

    uploaded_id = _recording(tenant_id, stereo_call)
    ingest.ingest(uploaded_id, settings)
    upload = {"utterances": [{"start": 6.2, "end": 9.0, "text": "my bill is wrong", "channel": 0,
                              "words": [{"word": "my", "start": 6.2, "end": 6.4},
                                        {"word": "bill", "start": 6.5, "end": 6.9}]}]}
    from api.main import create_app

    with TestClient(create_app()) as client:
        headers = {"X-API-Key": key}
        put = client.put(f"/v1/recordings/{uploaded_id}/transcript", headers=headers,
                         files={"transcript": ("words.json", json.dumps(upload), "application/json")})
        assert put.status_code == 200, put.text
        theirs = client.get(f"/v1/recordings/{uploaded_id}/transcript", headers=headers).json()
        response = client.get(f"/v1/recordings/{rec_id}/transcript", headers=headers)
        assert response.status_code == 200, response.text
        ours = response.json()
        assert client.get(f"/v1/recordings/{rec_id}/transcript",
                          headers={"X-API-Key": other_key}).status_code == 404

    assert theirs["source"] == "client" and ours["source"] == "asr"
    assert _keys(ours) == _keys(theirs), "the same shape, whoever wrote the words"
    utterances = ours["utterances"]
    assert {u["speaker"] for u in utterances} == {"customer", "agent"}
    assert {u["channel"] for u in utterances} == {0, 1}
    assert {u["language"] for u in utterances} == {"en"}
    text = " ".join(u["text"] for u in utterances).lower()
    assert "norsemen" in text and "rainbow" in text, text  # the Rainbow Passage, read on the call
    for u in utterances:
        assert u["words"] and u["start_s"] < u["end_s"] <= 36.5
        for w in u["words"]:
            assert u["start_s"] - 0.05 <= w["start_s"] <= w["end_s"] <= u["end_s"] + 0.05
