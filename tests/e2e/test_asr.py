"""Our own ASR: a tiny random Whisper checkpoint of the real architecture (tests/asr_checkpoint.py)
loaded through the production path. Random weights speak gibberish, so these tests check structure:
words exist, their times are monotonic, inside the audio and on the right channel, the rows obey the
rules an uploaded transcript must obey; the stage's ordering, idempotence and failure handling; and
one run through a real Celery worker from upload to timeline."""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from fastapi.testclient import TestClient
from sqlalchemy import update

from callpulse.settings import Settings, get_settings
from db.models import Recording, RecordingStatus, Transcript, utcnow
from db.queries.corrections import put_transcript
from db.session import transaction
from tests.asr_checkpoint import build_whisper
from tests.support import EXAMPLE, running_worker
from worker.pipeline.contracts import DecodedAudio
from worker.pipeline.media import decode
from worker.pipeline.speech import asr
from worker.pipeline.text import transcript
from worker.pipeline.text.transcript_index import TranscriptIndex
from worker.stages import asr as asr_stage
from worker.stages import infer, ingest, sweep

ROLES = {0: "agent", 1: "customer"}


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_whisper(tmp_path_factory.mktemp("tiny-whisper"), seed=1)


@pytest.fixture(scope="module")
def model(whisper_dir: Path) -> asr.AsrModel:
    return asr.load_model(whisper_dir, "cpu", "auto")


@pytest.fixture(scope="module")
def call_audio() -> DecodedAudio:
    return decode.decode(EXAMPLE, 16_000)


def _check_rows(rows: list[dict], duration_s: float, channels: int, roles: dict[int, str]) -> None:
    """Everything the infer stage and the API rely on, whatever the words say."""
    assert rows, "the model emitted tokens, so there are utterances"
    by_channel: dict[int, list[dict]] = {}
    for row in rows:
        assert set(row) == {"start_s", "end_s", "text", "speaker", "channel", "words"}
        assert row["channel"] in range(channels)
        assert row["speaker"] == roles.get(row["channel"], f"speaker_{row['channel']}")
        assert 0.0 <= row["start_s"] <= row["end_s"] <= duration_s + 1e-6
        assert row["words"] and row["text"] == " ".join(w[2] for w in row["words"])
        previous_end = row["start_s"]
        for start, end, text in row["words"]:
            assert text.strip() == text and text
            assert row["start_s"] - 1e-6 <= start <= end <= row["end_s"] + 1e-6
            assert start >= previous_end - 1e-6, "word times are monotonic"
            previous_end = end
        by_channel.setdefault(row["channel"], []).append(row)
    for items in by_channel.values():
        items.sort(key=lambda r: r["start_s"])
        for a, b in itertools.pairwise(items):
            assert a["end_s"] <= b["start_s"] + 1e-6, "one channel's utterances never overlap"
    # The same rules an uploaded transcript is held to (a 422 otherwise).
    upload = {"utterances": [{**{k: r[k] for k in ("start_s", "end_s", "text", "speaker", "channel")},
                              "words": [{"start": a, "end": b, "word": t} for a, b, t in r["words"]]}
                             for r in rows]}
    fmt, parsed = transcript.parse_with_format(json.dumps(upload).encode(), duration_s=duration_s,
                                               channels=channels)
    assert fmt == "json" and len(parsed) == len(rows)


# --- the stage module, on real speech ----------------------------------------------------------------


def test_transcribe_real_speech_per_channel(model: asr.AsrModel, call_audio: DecodedAudio) -> None:
    from worker import runtime
    from worker.pipeline.speech import vad as segment

    speech = [asr.Span(s.channel, s.start_s, s.end_s) for s in
              segment.run(runtime.vad_model(), call_audio, ROLES, segment.SegmentationConfig())]
    rows = asr.transcribe(model, call_audio, ROLES, speech=speech, batch_size=2)
    _check_rows(rows, call_audio.duration_s, 2, ROLES)
    assert {r["channel"] for r in rows} == {0, 1}
    # Words only where VAD heard speech (plus the window's small context).
    for row in rows:
        spans = [sp for sp in speech if sp.channel == row["channel"]]
        windows = asr.plan_windows(spans, call_audio.duration_s)
        assert any(w.start_s - 1e-6 <= row["start_s"] and row["end_s"] <= w.end_s + 1e-6 for w in windows)
    # What the infer stage does with them: the words said inside a segment, on its channel.
    index = TranscriptIndex.from_rows(rows)
    found = [w for sp in speech for w in index.words(sp.start_s, sp.end_s, sp.channel)]
    assert found


def test_long_audio_is_decoded_in_windows_never_cut(model: asr.AsrModel, call_audio: DecodedAudio) -> None:
    # 100 s of one speaker: four windows, and words after the first 30 s.
    mono = np.tile(call_audio.samples[1], 3)[: 100 * 16_000]
    audio = DecodedAudio(samples=mono[None, :], sample_rate=16_000, duration_s=mono.size / 16_000)
    windows = asr.plan_windows([asr.Span(0, 0.0, audio.duration_s)], audio.duration_s)
    assert len(windows) == 4 and all(w.end_s - w.start_s <= asr.WINDOW_S + 1e-6 for w in windows)
    assert windows[0].start_s == 0.0 and windows[-1].end_s == pytest.approx(audio.duration_s)
    assert all(a.end_s == pytest.approx(b.start_s) for a, b in itertools.pairwise(windows))

    calls: list[tuple[int, int]] = []
    rows = asr.transcribe(model, audio, {0: "customer"}, batch_size=3,
                          progress=lambda done, total: calls.append((done, total)))
    _check_rows(rows, audio.duration_s, 1, {0: "customer"})
    assert calls == [(3, 4), (4, 4)], "windows go in batches of asr_batch_size"
    assert max(r["end_s"] for r in rows) > 60.0


def test_plan_windows_packs_speech_and_skips_silence() -> None:
    spans = [asr.Span(0, 1.0, 5.0), asr.Span(0, 6.0, 20.0), asr.Span(0, 25.0, 30.0),  # one window
             asr.Span(0, 100.0, 104.0),  # after a long silence: its own window, silence never decoded
             asr.Span(1, 2.0, 72.0)]  # a 70 s monologue on the other channel: three windows
    windows = asr.plan_windows(spans, 200.0)
    ch0 = [w for w in windows if w.channel == 0]
    assert [(w.start_s, w.end_s) for w in ch0] == [(0.8, 30.2), (99.8, 104.2)]
    ch1 = [w for w in windows if w.channel == 1]
    assert len(ch1) == 3 and ch1[0].start_s == 1.8 and ch1[-1].end_s == 72.2
    assert all(w.end_s - w.start_s <= asr.WINDOW_S + 1e-6 for w in windows)


def test_alignment_follows_attention() -> None:
    # Token k attends to frames around 20k: its start time is 20k frames / 50 per second.
    frames, tokens = 200, 6
    weights = np.zeros((2, tokens, frames))
    for k in range(tokens):
        weights[:, k, 20 * k: 20 * k + 20] = 1.0
    starts = asr._token_starts(weights)
    assert len(starts) == tokens
    assert np.all(np.diff(starts) > 0)
    assert starts == pytest.approx([0.4 * k for k in range(tokens)], abs=0.1)


def test_language_is_forced_or_detected(model: asr.AsrModel, call_audio: DecodedAudio) -> None:
    short = DecodedAudio(samples=call_audio.samples[:, : 8 * 16_000], sample_rate=16_000, duration_s=8.0)
    for language in ("de-DE", "french", "tlh", None):  # tlh: unknown to the checkpoint → detected
        rows = asr.transcribe(model, short, ROLES, language=language)
        _check_rows(rows, 8.0, 2, ROLES)


def test_unusable_checkpoints_are_classified(tmp_path: Path, whisper_dir: Path) -> None:
    with pytest.raises(asr.AsrUnavailable, match="ASR_MODEL_PATH"):
        asr.load_model(None)
    with pytest.raises(asr.AsrUnavailable, match=r"no config\.json"):
        asr.load_model(tmp_path / "missing")
    broken = tmp_path / "no-heads"
    broken.mkdir()
    for item in whisper_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    config = json.loads((broken / "generation_config.json").read_text())
    del config["alignment_heads"]
    (broken / "generation_config.json").write_text(json.dumps(config))
    with pytest.raises(asr.AsrUnavailable, match="alignment_heads"):
        asr.load_model(broken)


# --- the stage: ordering, idempotence, failures, sweep -----------------------------------------------


def _settings(model_path: Path | None) -> Settings:
    return get_settings().model_copy(update={"asr_enabled": True, "asr_model_path": model_path})


def _recording(tenant_id: uuid.UUID, media: Path) -> uuid.UUID:
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename=media.name, media_uri=str(media),
                        channel_roles={"0": "customer", "1": "agent"})
        s.add(rec)
        s.flush()
        return rec.id


def _transcript(rec_id: uuid.UUID) -> tuple[str, str, list[dict]] | None:
    with transaction() as s:
        row = s.get(Transcript, rec_id)
        return None if row is None else (row.source, row.format, row.utterances)


def test_stage_transcribes_before_inference(make_tenant, stereo_call: Path, whisper_dir: Path) -> None:
    settings = _settings(whisper_dir)
    tenant_id, _ = make_tenant(["customer"])
    rec_id = _recording(tenant_id, stereo_call)

    segmented = ingest.ingest(rec_id, settings)
    assert segmented.transcribe == [rec_id] and not segmented.infer_batches, "words before emotion"

    after = asr_stage.transcribe_recording(rec_id, settings)
    stored = _transcript(rec_id)
    assert stored is not None and stored[:2] == ("asr", "asr")
    _check_rows(stored[2], 36.0, 2, {0: "customer", 1: "agent"})
    segment_ids = [i for batch in after.infer_batches for i in batch]
    assert len(segment_ids) == 3  # the customer's segments: the same inference ingest would enqueue

    # A duplicate message: no second transcription, the transcript stays as it was.
    with transaction() as s:
        first_created = s.get(Transcript, rec_id).created_at  # type: ignore[union-attr]
    again = asr_stage.transcribe_recording(rec_id, settings)
    with transaction() as s:
        assert s.get(Transcript, rec_id).created_at == first_created  # type: ignore[union-attr]
    assert [i for b in again.infer_batches for i in b] == segment_ids

    for batch in after.infer_batches:
        infer.infer(batch, settings)
    with transaction() as s:
        assert s.get(Recording, rec_id).status == RecordingStatus.done.value  # type: ignore[union-attr]
    assert asr_stage.transcribe_recording(rec_id, settings).infer_batches == []  # final: nothing to do


def test_client_transcript_means_no_asr(make_tenant, stereo_call: Path, whisper_dir: Path) -> None:
    settings = _settings(whisper_dir)
    tenant_id, _ = make_tenant(["customer"])
    rec_id = _recording(tenant_id, stereo_call)
    rows = [{"start_s": 1.0, "end_s": 2.0, "text": "hello there", "speaker": "customer", "channel": 0,
             "words": [[1.0, 1.4, "hello"], [1.5, 2.0, "there"]]}]
    with transaction() as s:
        put_transcript(s, rec_id, "json", rows)
    followups = ingest.ingest(rec_id, settings)
    assert not followups.transcribe and followups.infer_batches
    # Even a stray asr message keeps the client's words.
    asr_stage.transcribe_recording(rec_id, settings)
    assert _transcript(rec_id) == ("client", "json", rows)


def test_missing_model_analyzes_without_words(make_tenant, stereo_call: Path, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tmp_path / "no-such-whisper")
    tenant_id, _ = make_tenant(["customer"])
    rec_id = _recording(tenant_id, stereo_call)
    assert ingest.ingest(rec_id, settings).transcribe == [rec_id]

    with caplog.at_level(logging.ERROR, logger="worker.stages.asr"):
        followups = asr_stage.transcribe_recording(rec_id, settings)
    assert "without words" in caplog.text and "no-such-whisper" in caplog.text
    assert sum(len(b) for b in followups.infer_batches) == 3
    assert _transcript(rec_id) is None
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.status == RecordingStatus.segmented.value and rec.error is None


def test_attempts_bound_a_crashing_transcription(make_tenant, stereo_call: Path, tmp_path: Path) -> None:
    settings = _settings(tmp_path / "never-loaded")
    tenant_id, _ = make_tenant(["customer"])
    rec_id = _recording(tenant_id, stereo_call)
    ingest.ingest(rec_id, settings)
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == rec_id).values(attempts=settings.max_attempts))
    # Over the budget: inference goes ahead at once, without even loading the model.
    followups = asr_stage.transcribe_recording(rec_id, settings)
    assert sum(len(b) for b in followups.infer_batches) == 3 and _transcript(rec_id) is None


def test_sweep_redrives_a_call_waiting_for_asr(make_tenant, stereo_call: Path, whisper_dir: Path) -> None:
    settings = _settings(whisper_dir)
    tenant_id, _ = make_tenant(["customer"])
    rec_id = _recording(tenant_id, stereo_call)
    ingest.ingest(rec_id, settings)  # its asr message is then "lost"
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == rec_id)
                  .values(updated_at=utcnow() - timedelta(seconds=settings.stuck_after_s + 60)))
    followups = sweep.sweep(settings)
    assert rec_id in followups.transcribe, "re-driven through ASR, not straight to inference"
    with transaction() as s:
        rec = s.get(Recording, rec_id)
        assert rec is not None and rec.status == RecordingStatus.segmented.value  # never failed
    asr_stage.transcribe_recording(rec_id, settings)
    assert _transcript(rec_id) is not None
    # Once it has words, a stuck call is re-driven to inference as before.
    with transaction() as s:
        s.execute(update(Recording).where(Recording.id == rec_id)
                  .values(updated_at=utcnow() - timedelta(seconds=settings.stuck_after_s + 60)))
    followups = sweep.sweep(settings)
    # Handed to the infer side, which decides with its own model version what is missing.
    assert rec_id not in followups.transcribe and rec_id in followups.resume


# --- end to end through a real worker ----------------------------------------------------------------


@pytest.fixture(scope="module")
def asr_worker(broker: str, whisper_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {"CALLPULSE_ASR_ENABLED": "true", "CALLPULSE_ASR_MODEL_PATH": str(whisper_dir),
           "CALLPULSE_ASR_BATCH_SIZE": "4"}
    with running_worker("asr", args=("--queues", "ingest,infer,rules,notify,asr", "--concurrency", "1"),
                        env=env) as proc:
        yield proc


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app()) as c:
        yield c


def _upload(client: TestClient, key: str, media: Path, transcript_body: bytes | None) -> str:
    files = {"file": (media.name, media.read_bytes(), "audio/wav")}
    if transcript_body is not None:
        files["transcript"] = ("words.json", transcript_body, "application/json")
    resp = client.post("/v1/recordings", headers={"X-API-Key": key}, files=files,
                       data={"metadata": json.dumps({"channel_roles": {"0": "customer", "1": "agent"}})})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _wait_done(client: TestClient, key: str, rec_id: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v1/recordings/{rec_id}", headers={"X-API-Key": key}).json()
        if body["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert body.get("status") == "done", body


def test_upload_without_transcript_gets_ours(client, make_tenant, asr_worker, stereo_call) -> None:
    _, key = make_tenant(["customer"])
    rec_id = _upload(client, key, stereo_call, None)
    _wait_done(client, key, rec_id)

    stored = client.get(f"/v1/recordings/{rec_id}/transcript", headers={"X-API-Key": key}).json()
    assert stored["source"] == "asr" and stored["utterances"]
    assert {u["speaker"] for u in stored["utterances"]} <= {"customer", "agent"}
    timeline = client.get(f"/v1/recordings/{rec_id}/timeline", headers={"X-API-Key": key}).json()
    with_words = [seg for seg in timeline["segments"] if seg["words"]]
    assert with_words, "the ASR words reach the segments"
    for seg in with_words:
        for word in seg["words"]:
            assert seg["start_s"] - 1e-6 <= (word["start_s"] + word["end_s"]) / 2 <= seg["end_s"] + 1e-6
    assert all(seg["label"] for seg in timeline["segments"] if seg["role"] == "customer")


def test_upload_with_transcript_keeps_the_clients(client, make_tenant, asr_worker, stereo_call) -> None:
    _, key = make_tenant(["customer"])
    body = json.dumps({"utterances": [{"start": 0.5, "end": 4.0, "text": "my bill is wrong", "channel": 0}]})
    rec_id = _upload(client, key, stereo_call, body.encode())
    _wait_done(client, key, rec_id)
    stored = client.get(f"/v1/recordings/{rec_id}/transcript", headers={"X-API-Key": key}).json()
    assert stored["source"] == "client"
    assert [u["text"] for u in stored["utterances"]] == ["my bill is wrong"]
