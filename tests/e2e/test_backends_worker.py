"""End to end through a real Celery worker process running each transformers backend from a tiny
local checkpoint: ingest → infer → predictions in Postgres. The worker gets its own Redis db
(not the suite's broker) so it never competes with test_pipeline's embedded worker for tasks."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from celery import Celery
from kombu import Exchange, Queue
from sqlalchemy import select

from db.models import Prediction, Recording, Segment
from db.session import transaction
from tests.backend_checkpoints import EXAMPLE, build_audio_classifier, build_omni
from tests.funasr_checkpoints import build_emotion2vec, build_sensevoice
from tests.r1_omni_checkpoint import build_release
from tests.support import FACE_SAMPLE, running_worker
from worker.jobs.app import QUEUES, TASK_ROUTES
from worker.pipeline import labels

BROKER = os.environ.get("CALLPULSE_TEST_BACKENDS_BROKER", "redis://127.0.0.1:6379/11")


def _sender() -> Celery:
    """A client app routed exactly like worker.jobs.app, but on this module's broker."""
    app = Celery("callpulse-backends-test", broker=BROKER)
    exchange = Exchange("callpulse", type="direct")
    app.conf.update(task_queues=[Queue(q, exchange, routing_key=q) for q in QUEUES],
                    task_default_exchange="callpulse", task_routes=TASK_ROUTES, task_serializer="json")
    return app


CHECKPOINT_NAMES = {"audio-classifier": "tiny-wav2vec2-emotion@", "omni": "qwen2.5-omni-thinker",
                    "r1-omni": "tiny-r1-omni@", "emotion2vec": "emotion2vec_plus_tiny@",
                    "sensevoice": "SenseVoiceSmall@"}


@pytest.fixture(scope="module")
def call_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("media") / "call.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(EXAMPLE), "-ar", "16000", "-c:a", "pcm_s16le",
                    str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def call_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example call with a face on screen: r1-omni gets frames through the real infer stage."""
    out = tmp_path_factory.mktemp("media") / "call.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-loop", "1", "-framerate", "2", "-i", str(FACE_SAMPLE),
                    "-i", str(EXAMPLE), "-c:v", "libx264", "-tune", "stillimage", "-pix_fmt", "yuv420p",
                    "-vf", "scale=160:-2", "-c:a", "aac", "-shortest", str(out)], check=True)
    return out


@pytest.fixture(scope="module", params=["audio-classifier", "omni", "r1-omni", "emotion2vec", "sensevoice"])
def backend_worker(
    request: pytest.FixtureRequest, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Celery]]:
    import redis

    backend = request.param
    if backend == "omni":
        checkpoint = build_omni(tmp_path_factory.mktemp("qwen2.5-omni-thinker"))
    elif backend == "r1-omni":
        checkpoint = build_release(tmp_path_factory.mktemp("r1-omni"))
    elif backend == "emotion2vec":
        checkpoint = build_emotion2vec(tmp_path_factory.mktemp("e2v") / "emotion2vec_plus_tiny")
    elif backend == "sensevoice":
        checkpoint = build_sensevoice(tmp_path_factory.mktemp("sv") / "SenseVoiceSmall")
    else:
        checkpoint = build_audio_classifier(tmp_path_factory.mktemp("wav2vec2-emotion"))
    redis.Redis.from_url(BROKER).flushdb()
    env = {"CALLPULSE_BROKER_URL": BROKER, "CALLPULSE_MODEL_BACKEND": backend,
           "CALLPULSE_MODEL_PATH": str(checkpoint), "CALLPULSE_DEVICE": "cpu",
           "CALLPULSE_OMNI_MAX_NEW_TOKENS": "16"}
    sender = _sender()
    with running_worker("backends", env=env, ping_app=sender):
        yield backend, sender
    redis.Redis.from_url(BROKER).flushdb()


def test_backend_through_real_worker(backend_worker, make_tenant, call_wav, call_mp4) -> None:
    backend, sender = backend_worker
    media = call_mp4 if backend == "r1-omni" else call_wav
    tenant_id, _ = make_tenant(["customer"])
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename=media.name, media_uri=str(media),
                        channel_roles={"0": "agent", "1": "customer"})
        s.add(rec)
        s.flush()
        rec_id = rec.id
    sender.send_task("callpulse.ingest_recording", args=[str(rec_id)])

    deadline = time.monotonic() + 150
    status = ""
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
        rows = s.execute(
            select(Segment, Prediction).join(Prediction, Prediction.segment_id == Segment.id)
            .where(Segment.recording_id == rec_id).order_by(Segment.start_s)
        ).all()
        analyzed = s.scalars(select(Segment).where(Segment.recording_id == rec_id, Segment.analyzed)).all()
        assert rows and len(rows) == len(analyzed)
        for segment, prediction in rows:
            assert segment.role == "customer"
            assert prediction.model_name == backend
            assert prediction.model_version.startswith(CHECKPOINT_NAMES[backend])
            assert prediction.label in labels.CANONICAL_LABELS
            assert abs(sum(prediction.scores.values()) - 1.0) < 1e-3
            assert prediction.reasoning and prediction.reasoning[0]["cue"] == "classifier"
            assert 0.0 <= prediction.confidence <= 1.0
            if backend == "r1-omni":  # the infer stage sampled the model's 8 frames for each segment
                assert prediction.modalities["audio"]["frames"] == 8
            if backend == "sensevoice":  # what the one pass heard besides the emotion is kept
                assert set(prediction.modalities["audio"]) >= {"language", "event"}
            for item in prediction.reasoning:
                assert segment.start_s - 1e-6 <= item["start_s"] <= item["end_s"] <= segment.end_s + 1e-6
