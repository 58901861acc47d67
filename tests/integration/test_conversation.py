"""Conversation measures: exact on hand-made turns, and within 0.2 s on a stereo call of real speech
built here with known silences and an interruption, analyzed by the real pipeline stages."""

from __future__ import annotations

import uuid
import wave
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from callpulse.settings import get_settings
from db.models import Recording
from db.session import transaction
from tests.live_support import pcm16
from tests.support import EXAMPLE
from worker import conversation
from worker.conversation import Turn
from worker.notify import events
from worker.stages import infer, ingest

RATE = 16000


def test_measures_on_known_turns() -> None:
    turns = [
        Turn(0, "agent", 0.0, 4.0, loudness_db=-20.0, syllables_per_s=4.0),
        Turn(1, "customer", 7.0, 12.0, loudness_db=-30.0, words=10, valence=-0.8, confidence=1.0),
        Turn(2, "agent", 11.0, 14.0, loudness_db=-14.0, syllables_per_s=5.0),  # cuts in at 11.0
        Turn(3, "customer", 14.0, 18.0, loudness_db=-24.0, words=12, valence=0.4, confidence=0.5),
        Turn(4, "agent", 18.1, 18.2, loudness_db=-20.0),  # 0.1 s: padding at a turn change, no overlap
    ]
    m = conversation.measure(turns, 20.0)
    assert m["talk"]["agent"] == {"seconds": 7.1, "share": 0.355}
    assert m["talk"]["customer"] == {"seconds": 9.0, "share": 0.45}
    assert m["non_talk"]["silences"] == [{"start_s": 4.0, "end_s": 7.0, "duration_s": 3.0}]
    assert m["non_talk"]["total_s"] == 3.0  # 18.2 → 20.0 is under 2 s
    assert m["interruptions"]["count"] == 1 and m["interruptions"]["total_s"] == 1.0
    assert m["interruptions"]["items"][0] == {"at_s": 11.0, "interrupter": "agent", "interrupted": "customer",
                                              "overlap_s": 1.0, "segment_index": 2}
    assert m["talk_speed"]["customer"] == {"words_per_minute": 146.7, "source": "words"}  # 22 words in 9 s
    assert m["talk_speed"]["agent"]["source"] == "syllables"
    assert m["talk_speed"]["agent"]["syllables_per_s"] == pytest.approx((4 * 4 + 5 * 3) / 7, abs=0.01)
    louder = {x["segment_index"]: x["relative_db"] for x in m["loudness"]}
    assert louder[2] == 6.0 and louder[1] == -3.0 and louder[3] == 3.0
    s = m["sentiment"]
    # Customer: -0.8 over 5 s at full confidence, +0.4 over 4 s at half: (-4 + 0.8) / 7 * 5.
    assert s["overall"] == pytest.approx(-2.29, abs=0.01)
    assert s["by_quarter"] == [None, -4.0, None, 2.0]
    assert s["trend"] == 6.0


def _clip(pcm: np.ndarray, channel: int, start: float, end: float) -> np.ndarray:
    return pcm[int(start * RATE): int(end * RATE), channel]


@pytest.fixture(scope="module")
def built_call(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real speech from the example call placed at known times: agent 0.5–5.55, silence to 9.0,
    customer 9.0–14.11, the agent cutting in at 12.5 (1.6 s of overtalk) until 17.36, silence to
    20.0, customer 20.0–24.6, 1.4 s of quiet to the end."""
    src = pcm16(EXAMPLE)
    out = np.zeros((26 * RATE, 2), dtype=np.int16)
    for channel, at, (a, b) in [(0, 0.5, (0.388, 5.436)), (1, 9.0, (6.02, 11.132)),
                                (0, 12.5, (12.132, 16.988)), (1, 20.0, (18.18, 22.78))]:
        piece = _clip(src, channel, a, b)
        out[int(at * RATE): int(at * RATE) + piece.size, channel] = piece
    path = tmp_path_factory.mktemp("conversation") / "built.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(out.tobytes())
    return path


def test_measures_on_a_built_call_of_real_speech(make_tenant, built_call: Path) -> None:
    tenant_id, key = make_tenant(["customer"])
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename="built.wav", media_uri=str(built_call),
                        channel_roles={"0": "agent", "1": "customer"})
        s.add(rec)
        s.flush()
        rec_id = rec.id
    settings = get_settings()
    for batch in ingest.ingest(rec_id, settings).infer_batches:
        infer.infer(batch, settings)
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.status == "done"
        m = rec.conversation
        payload = events.recording_data(rec)
    assert m is not None and payload.conversation == m

    silences = m["non_talk"]["silences"]
    assert len(silences) == 2
    assert abs(silences[0]["start_s"] - 5.55) <= 0.2 and abs(silences[0]["end_s"] - 9.0) <= 0.2
    assert abs(silences[1]["start_s"] - 17.36) <= 0.2 and abs(silences[1]["end_s"] - 20.0) <= 0.2
    [cut_in] = m["interruptions"]["items"]
    assert cut_in["interrupter"] == "agent" and cut_in["interrupted"] == "customer"
    assert abs(cut_in["at_s"] - 12.5) <= 0.2 and abs(cut_in["overlap_s"] - 1.6) <= 0.2
    assert abs(m["talk"]["customer"]["seconds"] - (5.11 + 4.6)) <= 0.4
    assert abs(m["talk"]["agent"]["seconds"] - (5.05 + 4.86)) <= 0.4
    assert m["talk_speed"]["customer"]["source"] == "syllables"
    assert 1.0 < m["talk_speed"]["customer"]["syllables_per_s"] < 9.0
    assert m["sentiment"]["overall"] is not None and -5 <= m["sentiment"]["overall"] <= 5

    # The API shows the same measures; another tenant sees nothing.
    from api.main import create_app

    with TestClient(create_app()) as client:
        body = client.get(f"/v1/recordings/{rec_id}", headers={"X-API-Key": key}).json()
        assert body["conversation"] == m
        _, other = make_tenant()
        assert client.get(f"/v1/recordings/{rec_id}", headers={"X-API-Key": other}).status_code == 404
        assert client.get(f"/v1/recordings/{uuid.uuid4()}", headers={"X-API-Key": key}).status_code == 404
