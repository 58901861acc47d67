"""One SenseVoice-Small release for both jobs, through a real Celery worker: CALLPULSE_ASR_ENGINE=
sensevoice transcribes the call (words with times in the transcript) and CALLPULSE_MODEL_BACKEND=
sensevoice labels the customer's segments from the same directory (language and event kept with the
voice answer). A tiny random release (tests/funasr_checkpoints.py): the path is real, the words are
not. Own Redis db (CALLPULSE_TEST_BACKENDS_BROKER), as test_backends_worker."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from kombu import Exchange, Queue
from sqlalchemy import select

from db.models import Prediction, Recording, Segment, Transcript
from db.session import transaction
from tests.funasr_checkpoints import build_sensevoice
from tests.support import running_worker
from worker.jobs.app import QUEUES, TASK_ROUTES
from worker.pipeline import labels

BROKER = os.environ.get("CALLPULSE_TEST_BACKENDS_BROKER", "redis://127.0.0.1:6379/11")


@pytest.fixture(scope="module")
def worker(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Celery]:
    import redis

    release = build_sensevoice(tmp_path_factory.mktemp("sv") / "SenseVoiceSmall")
    redis.Redis.from_url(BROKER).flushdb()
    env = {"CALLPULSE_BROKER_URL": BROKER, "CALLPULSE_MODEL_BACKEND": "sensevoice",
           "CALLPULSE_MODEL_PATH": str(release), "CALLPULSE_DEVICE": "cpu", "CALLPULSE_ASR_ENABLED": "true",
           "CALLPULSE_ASR_ENGINE": "sensevoice"}
    sender = Celery("callpulse-sensevoice-test", broker=BROKER)
    exchange = Exchange("callpulse", type="direct")
    sender.conf.update(task_queues=[Queue(q, exchange, routing_key=q) for q in QUEUES],
                       task_default_exchange="callpulse", task_routes=TASK_ROUTES, task_serializer="json")
    queues = ("--queues", "ingest,asr,infer,rules,notify", "--concurrency", "1")
    with running_worker("sensevoice", args=queues, env=env, ping_app=sender):
        yield sender
    redis.Redis.from_url(BROKER).flushdb()


def test_words_and_emotion_from_one_release(worker: Celery, make_tenant, stereo_call: Path) -> None:
    tenant_id, _ = make_tenant(["customer"])
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename=stereo_call.name, media_uri=str(stereo_call),
                        channel_roles={"0": "customer", "1": "agent"})
        s.add(rec)
        s.flush()
        rec_id = rec.id
    worker.send_task("callpulse.ingest_recording", args=[str(rec_id)])
    deadline, status, error = time.monotonic() + 180, "", None
    while time.monotonic() < deadline:
        with transaction() as s:
            row = s.get(Recording, rec_id)
            assert row is not None
            status, error = row.status, row.error
        if status in ("done", "failed"):
            break
        time.sleep(0.5)
    assert status == "done", (status, error)

    with transaction() as s:
        transcript = s.get(Transcript, rec_id)
        assert transcript is not None and transcript.source == "asr"
        utterances = transcript.utterances
        rows = s.execute(select(Segment, Prediction).join(Prediction, Prediction.segment_id == Segment.id)
                         .where(Segment.recording_id == rec_id)).all()
    assert utterances and {u["speaker"] for u in utterances} <= {"customer", "agent"}
    for u in utterances:
        assert u["language"] in ("zh", "en", "yue", "ja", "ko")
        for start_s, end_s, text, probability in u["words"]:
            assert u["start_s"] - 1e-3 <= start_s <= end_s <= u["end_s"] + 1e-3 and text
            assert 0.0 <= probability <= 1.0
    assert rows
    for segment, prediction in rows:
        assert segment.role == "customer" and prediction.model_name == "sensevoice"
        assert prediction.model_version.startswith("SenseVoiceSmall@")
        assert prediction.label in labels.CANONICAL_LABELS
        assert set(prediction.modalities["audio"]) >= {"language", "event"}
