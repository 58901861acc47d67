"""Edge cases found in review: media layouts the decoder must accept or refuse with a reason,
bulk inserts past Postgres' parameter limit, and settings parsed from the environment."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from callpulse.settings import Settings
from db.models import Recording, Segment
from db.queries.pipeline import insert_segments
from db.session import transaction
from tests.support import EXAMPLE
from worker.pipeline.media import decode


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def test_webm_whose_audio_is_shorter_than_its_video_is_not_called_truncated(tmp_path: Path) -> None:
    out = tmp_path / "support.webm"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=duration=20:size=64x64:rate=5", "-t", "8", "-i", str(EXAMPLE),
            "-c:v", "libvpx", "-c:a", "libopus", "-pix_fmt", "yuv420p", str(out))
    info = decode.probe(out)
    assert info.has_video and info.duration_s > 15  # the container covers the video
    audio = decode.decode(out, 16_000, info)
    assert 7.5 < audio.duration_s < 8.5


def test_too_many_channels_is_refused_with_a_reason(tmp_path: Path) -> None:
    out = tmp_path / "many.wav"
    _ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-af",
            "pan=hexadecagonal|" + "|".join(f"c{i}=c0" for i in range(16)), str(out))
    with pytest.raises(decode.MediaError) as err:
        decode.probe(out)
    assert err.value.status_code == 422 and "16 channels" in err.value.reason


def test_segment_insert_beyond_postgres_parameter_limit(make_tenant) -> None:
    """11 columns × 7,000 rows = 77,000 parameters: more than one statement may carry."""
    tenant_id, _ = make_tenant()
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename="long.wav", media_uri="/nonexistent/long.wav")
        s.add(rec)
        s.flush()
        rows = [{"id": uuid.uuid4(), "recording_id": rec.id, "index": i, "channel": i % 4,
                 "speaker": "speaker_0", "role": "unknown", "start_s": i * 3.0, "end_s": i * 3.0 + 2.5,
                 "acoustics": {}, "analyzed": True, "skip_reason": None} for i in range(7000)]
        insert_segments(s, rows)
        insert_segments(s, rows)  # idempotent as well
        rec_id = rec.id
    with transaction() as s:
        count = select(func.count()).select_from(Segment).where(Segment.recording_id == rec_id)
        assert s.scalar(count) == 7000


def test_default_analyzed_roles_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLPULSE_DEFAULT_ANALYZED_ROLES", "customer, Supervisor")
    assert Settings().default_analyzed_roles == ["customer", "supervisor"]
    monkeypatch.setenv("CALLPULSE_DEFAULT_ANALYZED_ROLES", '["customer"]')
    assert Settings().default_analyzed_roles == ["customer"]
