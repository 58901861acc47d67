"""What every test tier shares: the settings pointed at the test services before anything reads
them, and real media made with ffmpeg. The Postgres and Redis fixtures live in tests/services.py,
which only tests/integration and tests/e2e switch on, so a unit test never creates a database."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("CALLPULSE_TEST_PG_ADMIN", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TEST_DB = os.environ.get("CALLPULSE_TEST_DB", f"callpulse_test_{os.getpid()}")
TEST_URL = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + TEST_DB
TEST_BROKER = os.environ.get("CALLPULSE_TEST_BROKER", "redis://127.0.0.1:6379/15")
MEDIA_DIR = Path(tempfile.mkdtemp(prefix="callpulse-media-"))

# Settings are read once per process: point them at the test services before anything imports them.
os.environ["CALLPULSE_DATABASE_URL"] = TEST_URL
os.environ["CALLPULSE_BROKER_URL"] = TEST_BROKER
os.environ["CALLPULSE_MEDIA_DIR"] = str(MEDIA_DIR)
os.environ["CALLPULSE_DATA_DIR"] = str(MEDIA_DIR.parent / "callpulse-data")
# Many tests present wrong keys on purpose, all from the same test client address: the rate limits
# are tested with their own settings (tests/integration/test_web_limits.py), everything else runs
# without them.
os.environ.setdefault("CALLPULSE_AUTH_FAILURES_PER_IP", "0")
os.environ.setdefault("CALLPULSE_LOGIN_ATTEMPTS_PER_IP", "0")
os.environ.setdefault("CALLPULSE_API_REQUESTS_PER_KEY_PER_MINUTE", "0")
os.environ.setdefault("CALLPULSE_WEBHOOK_REDELIVERIES_PER_MINUTE", "0")
# The product transcribes every call by default; the pipeline, API and rules tests are about other
# stages, so they run without it (seconds instead of minutes). tests/unit/test_asr_bundled.py runs the
# default itself (the variable removed) and the ASR tests turn it on where they need it.
os.environ.setdefault("CALLPULSE_ASR_ENABLED", "false")

# Defined once for the whole run (a session fixture defined in two conftests would build two databases
# under the same name); tests/integration and tests/e2e turn the database on for their tests.
pytest_plugins = ["tests.services"]


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return MEDIA_DIR


@pytest.fixture(scope="session")
def stereo_call(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stereo call from real speech, as a contact center would store it (16 kHz PCM WAV), with
    the channels swapped relative to the shipped example, so channel 0 is the customer."""
    import subprocess

    from tests.support import EXAMPLE

    out = tmp_path_factory.mktemp("media") / "call.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(EXAMPLE), "-af", "pan=stereo|c0=c1|c1=c0",
         "-ar", "16000", "-c:a", "pcm_s16le", str(out)],
        check=True,
    )
    return out
