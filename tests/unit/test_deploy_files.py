"""docker-compose.yml cannot run here (no Docker engine), so its shape is checked by parsing it."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


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
        broker = env["CALLPULSE_BROKER_URL"]
        assert broker.startswith("redis://:") and "@redis:6379/" in broker  # with the password
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


def test_compose_ships_no_default_passwords_and_no_open_flower() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    # Postgres: the password comes from the operator, compose refuses to start without it.
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${CALLPULSE_POSTGRES_PASSWORD:?")
    assert "callpulse:callpulse@" not in text
    # Redis asks for a password, and every client URL carries it.
    redis_command = " ".join(services["redis"]["command"])
    assert "--requirepass ${CALLPULSE_REDIS_PASSWORD:?" in redis_command
    assert compose["x-callpulse-env"]["CALLPULSE_BROKER_URL"].startswith("redis://:${CALLPULSE_REDIS_PASSWORD:?")
    assert "redis://redis:" not in text
    # Flower: basic auth with an operator-set password, published on loopback only.
    flower = " ".join(services["flower"]["command"])
    assert "--basic-auth=" in flower and "${CALLPULSE_FLOWER_PASSWORD:?" in flower
    assert all(str(p).startswith("127.0.0.1:") for p in services["flower"]["ports"])
    assert "ports" not in services["redis"] and "ports" not in services["postgres"]


def test_compose_has_healthchecks_and_one_image_for_api_and_workers() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    # One image: built once (by migrate), run by the api and the CPU worker without a registry.
    image = services["migrate"]["image"]
    assert "build" in services["migrate"]
    for name in ("api", "worker-cpu"):
        assert services[name]["image"] == image and "build" not in services[name]
        assert services[name]["pull_policy"] == "never"
    assert services["worker-gpu"]["image"] != image  # CUDA torch: its own build of the Dockerfile
    # The API is healthy when /healthz and /readyz answer; each worker when it answers a ping.
    api_check = " ".join(services["api"]["healthcheck"]["test"])
    assert "/healthz" in api_check and "/readyz" in api_check and ":8000" in api_check
    for name, node in (("worker-cpu", "cpu@"), ("worker-gpu", "gpu@")):
        check = " ".join(services[name]["healthcheck"]["test"])
        assert "inspect ping" in check and f"-d {node}$$HOSTNAME" in check
        # ... the node name the worker itself runs under.
        command = services[name]["command"]
        assert command[command.index("--name") + 1] == f"{node}%h"
        assert "9540" in services[name]["expose"]  # its Prometheus metrics


def test_readme_distributed_section_is_complete() -> None:
    """What a newcomer copies: the database is created, `callpulse` is on PATH, the probes are
    named, and the worker consumes every queue the pipeline sends to (asr is on by default)."""
    import re

    from worker.jobs.app import QUEUES

    text = (ROOT / "README.md").read_text()
    block = text.split("### Distributed", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert "createdb" in block and "source .venv/bin/activate" in block
    assert "/healthz" in block and "/readyz" in block
    worker = next(line for line in block.splitlines() if line.startswith("callpulse worker"))
    named = re.search(r"--queues (\S+)", worker)
    assert named is None or set(named.group(1).split(",")) == set(QUEUES), worker
    # The TORCH_INDEX note is where a new user reads first: before the first section.
    assert text.index("TORCH_INDEX=") < text.index("## Run it")


def test_redis_runs_with_aof_as_the_docs_recommend() -> None:
    """AOF keeps the queues across a Redis restart; compose, README and DESIGN say the same."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert "--appendonly yes" in (ROOT / "README.md").read_text().split("### Distributed", 1)[1]
    assert "appendonly yes" in (ROOT / "docs" / "DESIGN.md").read_text()
