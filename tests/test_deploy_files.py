"""docker-compose.yml cannot run here (no Docker engine), so its shape is checked by parsing it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_declares_the_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "api", "worker-cpu", "worker-gpu", "flower", "migrate"} <= set(services)

    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    gpu_queues = gpu["command"][gpu["command"].index("--queues") + 1].split(",")
    assert "infer" in gpu_queues

    for name in ("api", "worker-cpu", "worker-gpu", "migrate"):
        env = services[name]["environment"]
        assert env["CALLPULSE_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["CALLPULSE_BROKER_URL"].startswith("redis://redis:")
    # api and workers must share the media volume: the worker decodes what the api stored.
    for name in ("api", "worker-cpu", "worker-gpu"):
        assert any(v.startswith("media:") for v in services[name]["volumes"])
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"

    # Our own ASR: the GPU worker consumes the asr queue with a local Whisper checkpoint; whether calls
    # go there is decided where ingest and the sweep run, so every worker sees CALLPULSE_ASR_ENABLED.
    from worker.jobs.app import QUEUES

    assert "asr" in gpu_queues and set(gpu_queues) <= set(QUEUES)
    assert gpu["environment"]["CALLPULSE_ASR_MODEL_PATH"].startswith("/models/")
    for name in ("worker-cpu", "worker-gpu"):
        assert "CALLPULSE_ASR_ENABLED" in services[name]["environment"]
    assert set(compose["volumes"]) >= {"pgdata", "media"}


def test_dockerfile_pins_cpu_torch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in text and "ffmpeg" in text
