"""Words and faces through the real pipeline: upload with a transcript (API) → Redis → a real Celery
worker → Postgres → timeline with text and video evidence; and bad transcripts refused with 422."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from db.models import Recording, utcnow
from db.session import transaction
from tests.rules_fixtures import allow_loopback_targets, auth, client, seed_recording  # noqa: F401
from tests.support import ROOT, running_worker

FACE = ROOT / "tests" / "data" / "face_sample.jpg"
ANGRY = "this is the third time I call and nobody fixed it I am really angry about this"


@pytest.fixture(scope="module")
def worker(broker: str) -> Iterator[subprocess.Popen[bytes]]:
    with running_worker("multimodal") as proc:
        yield proc


@pytest.fixture(scope="module")
def video_call(stereo_call: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A video-support recording: the shipped face photo as the picture, the stereo call as sound."""
    out = tmp_path_factory.mktemp("video") / "support.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-framerate", "5", "-i", str(FACE),
                    "-i", str(stereo_call), "-c:v", "libx264", "-tune", "stillimage", "-pix_fmt", "yuv420p",
                    "-vf", "scale=320:-2", "-c:a", "aac", "-shortest", str(out)], check=True)
    return out


def _transcript(channel: int = 0, until_s: float = 36.0) -> bytes:
    """The customer's words over the whole call, one utterance every 3 s (the words are spread)."""
    utterances = [{"start": t, "end": t + 2.9, "text": ANGRY, "channel": channel}
                  for t in range(0, int(until_s) - 3, 3)]
    return json.dumps({"utterances": utterances}).encode()


def _upload(client, key: str, media: Path, transcript: tuple[str, bytes, str] | None, mime: str):
    files = {"file": (media.name, media.read_bytes(), mime)}
    if transcript is not None:
        files["transcript"] = transcript
    return client.post("/v1/recordings", headers=auth(key), files=files,
                       data={"metadata": json.dumps({"channel_roles": {"0": "customer", "1": "agent"}})})


def _wait_done(client, key: str, rec_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/recordings/{rec_id}", headers=auth(key)).json()
        if body["status"] in ("done", "failed"):
            assert body["status"] == "done", body
            return client.get(f"/v1/recordings/{rec_id}/timeline", headers=auth(key)).json()
        time.sleep(0.5)
    raise AssertionError(f"{rec_id} not done after {timeout} s")


def _inside(item: dict, seg: dict) -> bool:
    return seg["start_s"] - 1e-6 <= item["start_s"] <= item["end_s"] <= seg["end_s"] + 1e-6


def test_transcript_words_become_text_evidence(client, make_tenant, worker, stereo_call) -> None:
    _, key = make_tenant(["customer"])
    resp = _upload(client, key, stereo_call, ("words.json", _transcript(), "application/json"), "audio/wav")
    assert resp.status_code == 202, resp.text
    rec_id = resp.json()["id"]
    stored = client.get(f"/v1/recordings/{rec_id}/transcript", headers=auth(key)).json()
    assert stored["format"] == "json" and stored["source"] == "client"
    assert {u["channel"] for u in stored["utterances"]} == {0}

    timeline = _wait_done(client, key, rec_id)
    customer = [s for s in timeline["segments"] if s["role"] == "customer"]
    assert len(customer) == 3
    for seg in customer:
        assert seg["words"] and all(seg["start_s"] <= (w["start_s"] + w["end_s"]) / 2 <= seg["end_s"]
                                    for w in seg["words"])
        assert set(seg["modalities"]) == {"audio", "text"}
        assert abs(sum(m["weight"] for m in seg["modalities"].values()) - 1.0) < 1e-3
        text_items = [e for e in seg["reasoning"] if e["modality"] == "text"]
        assert text_items and all(_inside(e, seg) for e in text_items)
        quoted = [e for e in text_items if e["cue"] == "words"]
        assert quoted and all(e["words"] and e["words"].split()[0] in ANGRY for e in quoted)
        # The supervisor's sentence: who, when, the cues with their times, the label, the doubt.
        assert seg["reasoning_text"].startswith("Customer, ")
        assert "words '" in seg["reasoning_text"] and "uncertain: " in seg["reasoning_text"]
        assert seg["uncertain"] == (seg["confidence"] < 0.5)
    # Per-speaker normalisation: the voice model's reference of the customer, made once, stored.
    with transaction() as s:
        rec = s.get(Recording, uuid.UUID(rec_id))
        assert rec is not None
        [(version, speakers)] = rec.speaker_references.items()
        assert version.startswith("ser-") and set(speakers) == {"customer"} and speakers["customer"]["n"] == 3
    # The agent's channel had no words in the transcript and is not analyzed (tenant policy).
    assert all(not s["words"] and s["label"] is None for s in timeline["segments"] if s["role"] == "agent")


def test_video_frames_become_face_evidence(client, make_tenant, worker, video_call) -> None:
    _, key = make_tenant(["customer"])
    resp = _upload(client, key, video_call, None, "video/mp4")
    assert resp.status_code == 202, resp.text
    timeline = _wait_done(client, key, resp.json()["id"])
    customer = [s for s in timeline["segments"] if s["role"] == "customer"]
    assert customer
    for seg in customer:
        assert "video" in seg["modalities"], seg["modalities"]
        assert seg["modalities"]["video"]["faces"] >= 1
        faces = [e for e in seg["reasoning"] if e["modality"] == "video"]
        assert faces and all(_inside(e, seg) for e in faces)
        for face in faces:
            x, y, w, h = face["box"]
            assert w > 20 and h > 20 and x >= 0 and y >= 0 and face["label"] and 0 < face["value"] <= 1
        assert "face " in seg["reasoning_text"]


@pytest.mark.parametrize(("name", "body", "reason"), [
    ("overlap.json", json.dumps({"utterances": [
        {"start": 1.0, "end": 4.0, "text": "hello there", "speaker": "customer"},
        {"start": 3.0, "end": 5.0, "text": "again", "speaker": "customer"}]}).encode(), "overlaps"),
    ("late.json", json.dumps({"utterances": [{"start": 30.0, "end": 90.0, "text": "bye", "channel": 0}]})
     .encode(), "after the end of the recording"),
    ("latin1.vtt", "WEBVTT\n\n00:01.000 --> 00:02.000\nJ'ai été très déçu\n".encode("latin-1"), "UTF-8"),
    ("backwards.vtt", b"WEBVTT\n\n00:05.000 --> 00:02.000\nno\n", "ends before it starts"),
    ("junk.bin", b"\x89PNG\r\n\x1a\n not a transcript", "not valid UTF-8"),
    ("words.txt", b"hello, this is just text", "not a transcript"),
])
def test_bad_transcripts_get_422_and_nothing_is_kept(client, make_tenant, stereo_call, media_dir, name, body,
                                                     reason) -> None:
    tenant_id, key = make_tenant(["customer"])
    resp = _upload(client, key, stereo_call, (name, body, "application/octet-stream"), "audio/wav")
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert detail[0]["loc"][-1] == "transcript" and reason in detail[0]["msg"]
    # Nothing of the upload stays behind: no recording row, no media file.
    assert client.get("/v1/recordings", headers=auth(key)).json()["items"] == []
    assert not [p for p in (media_dir / str(tenant_id)).rglob("*") if p.is_file()]


def test_put_transcript_later_and_webvtt(client, make_tenant) -> None:
    tenant_id, key = make_tenant(["customer"])
    rec_id, _ = seed_recording(tenant_id, [("customer", "neutral", 0.6, 0.0)] * 2, status="done")
    vtt = (b"WEBVTT\n\nNOTE from the contact center's ASR\n\n1\n00:00:00.500 --> 00:00:03.000\n"
           b"<v Customer>I want to <00:00:01.500>cancel my contract\n\n"
           b"00:05.200 --> 00:08.000 align:start\n<v customer>right now please\n")
    resp = client.put(f"/v1/recordings/{rec_id}/transcript", headers=auth(key),
                      files={"transcript": ("call.vtt", vtt, "text/vtt")})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["format"] == "webvtt" and [u["text"] for u in body["utterances"]] == [
        "I want to cancel my contract", "right now please"]
    # The seeded segments are 0–4.5 s and 5–9.5 s: each shows its own words.
    timeline = client.get(f"/v1/recordings/{rec_id}/timeline", headers=auth(key)).json()
    words = [" ".join(w["text"] for w in s["words"]) for s in timeline["segments"]]
    assert words == ["I want to cancel my contract", "right now please"]

    late = b"WEBVTT\n\n00:50.000 --> 00:59.000\ntoo late\n"
    bad = client.put(f"/v1/recordings/{rec_id}/transcript", headers=auth(key),
                     files={"transcript": ("x.vtt", late, "text/vtt")})
    assert bad.status_code == 422 and "after the end" in bad.text
    kept = client.get(f"/v1/recordings/{rec_id}/transcript", headers=auth(key)).json()
    assert kept["utterances"][0]["text"] == "I want to cancel my contract"
    assert client.get(f"/v1/recordings/{uuid.uuid4()}/transcript", headers=auth(key)).status_code == 404

    # Escalation rules' `words` conditions now see the transcript: the first segment matches.
    rule = client.post("/v1/rules", headers=auth(key), json={"name": "churn risk", "definition": {
        "roles": ["customer"], "when": {"words": {"any": ["cancel my contract"]}}}}).json()
    window = {"from": (utcnow() - timedelta(hours=1)).isoformat(),
              "to": (utcnow() + timedelta(minutes=1)).isoformat()}
    fired = client.post(f"/v1/rules/{rule['id']}/backtest", headers=auth(key), json=window).json()
    assert [(f["recording_id"], f["first_segment_index"]) for f in fired["firings"]] == [(str(rec_id), 0)]
