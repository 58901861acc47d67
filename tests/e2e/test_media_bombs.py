"""Decompression bombs and poison media, performed for real: an 8-channel Ogg/Opus file of silence
declaring 21,500 s (413 at upload, nothing kept), a small 8-channel silence bomb decoded with
bounded memory, a chained Ogg whose header hides its length (the decoder stops at the budget), a
file the decoder cannot run on (the recording fails with a reason on its first attempt while the
same worker goes on to finish a good call), and ffprobe's own messages kept from clients."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import Recording
from db.session import transaction
from tests.support import EXAMPLE, ROOT, running_worker
from worker.pipeline.media import decode


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True)


def _silence_8ch(out: Path, seconds: float, folder: Path) -> Path:
    """8 channels of 48 kHz silence as Ogg/Opus: one minute encoded, then looped by stream copy
    (encoding hours of audio would take minutes; the attacker's file is the same bytes)."""
    minute = folder / f"minute-{uuid.uuid4().hex[:6]}.opus"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=7.1", "-t", "60", "-c:a", "libopus", "-b:a", "6k",
            str(minute))
    _ffmpeg("-stream_loop", "-1", "-i", str(minute), "-t", str(seconds), "-c", "copy", str(out))
    return out


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bombs")
    files = {
        "huge": _silence_8ch(root / "huge.opus", 21_500, root),
        "small": _silence_8ch(root / "small.opus", 180, root),
    }
    # A chained Ogg: a 2 s mono link, then a minute of 8 channels. ffprobe reports no duration at
    # all, so the probe-time budget sees nothing to refuse; only the decoder's count can stop it.
    first = root / "first.opus"
    _ffmpeg("-f", "lavfi", "-i", "sine=d=2", "-c:a", "libopus", str(first))
    minute = next(root.glob("minute-*.opus"))
    files["chained"] = root / "chained.opus"
    files["chained"].write_bytes(first.read_bytes() + minute.read_bytes())
    return files


@pytest.fixture
def client(broker: str) -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app()) as test_client:
        yield test_client


def _upload(client: TestClient, key: str, path: Path, name: str | None = None) -> object:
    with path.open("rb") as fh:
        return client.post("/v1/recordings", headers={"Authorization": f"Bearer {key}"},
                           files={"file": (name or path.name, fh, "application/octet-stream")})


def test_hours_of_8_channel_silence_is_413_at_upload_and_leaves_nothing(
        client: TestClient, make_tenant, bombs: dict[str, Path], media_dir: Path) -> None:
    tenant_id, key = make_tenant()
    info = decode.probe(bombs["huge"])
    assert info.channels == 8 and info.duration_s > 21_000  # under the old 6-hour, 8-channel limits
    resp = _upload(client, key, bombs["huge"])
    assert resp.status_code == 413, resp.text
    detail = resp.json()["detail"]
    assert "too large once decoded" in detail and "8 channel(s)" in detail
    with transaction() as s:
        assert not list(s.scalars(select(Recording).where(Recording.tenant_id == tenant_id)))
    assert not [p for p in (media_dir / str(tenant_id)).rglob("*") if p.is_file()]


def test_small_silence_bomb_decodes_in_bounded_memory(bombs: dict[str, Path]) -> None:
    """212 KB of Opus took a worker from 0.8 to 1.6 GB; the stage code now adds less than 3x the
    int16 size of the audio (the previous decoder added over 10x on this file)."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_decode_memory.py"), "--measure",
                          str(bombs["small"])], check=True, capture_output=True, text=True, cwd=ROOT)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["channels"] == 8 and report["int16_bytes"] >= 8 * 179 * 16_000 * 2
    assert report["ratio_to_int16"] < 3.0, report


def test_decoder_stops_at_the_budget_when_the_header_hides_the_length(
        bombs: dict[str, Path], tmp_path: Path) -> None:
    info = decode.probe(bombs["chained"])
    assert decode.decoded_bytes(info, 16_000) == 0  # nothing for the probe-time check to refuse
    limits = decode.DecodeLimits(max_decoded_bytes=1_000_000)
    target = tmp_path / "audio16k.npy"
    with pytest.raises(decode.MediaError) as err:
        decode.decode_to_file(bombs["chained"], target, 16_000, info, limits)
    assert err.value.status_code == 413 and "header understated" in err.value.reason
    assert not list(tmp_path.iterdir())  # neither the cache nor its temp file is left behind


def test_decoded_cache_matches_the_audio_and_is_int16_on_disk(tmp_path: Path) -> None:
    audio = decode.decode_to_file(EXAMPLE, tmp_path / "audio16k.npy", 16_000)
    assert audio.samples.dtype.name == "int16" and audio.channels == 2
    assert abs(audio.duration_s - 36.0) < 0.1
    assert (tmp_path / "audio16k.npy").stat().st_size == 128 + audio.samples.size * 2
    # Both channels hold speech, and they differ (channel order survived the interleaved write).
    left, right = (abs(audio.samples[c].astype("int32")).mean() for c in range(2))
    assert left > 100 and right > 100 and abs(audio.samples[0, :160000] - audio.samples[1, :160000]).sum()


def test_ffprobe_output_and_other_paths_never_reach_the_client(
        client: TestClient, make_tenant, tmp_path: Path) -> None:
    """A playlist naming another file: refused by the demuxer allow-list, with a generic reason
    that is the same whether the named path exists or not (no oracle)."""
    _, key = make_tenant()
    answers = []
    for target in (str(EXAMPLE), "/nonexistent/other-tenant/original.wav"):
        playlist = tmp_path / f"p-{uuid.uuid4().hex[:6]}.m3u8"
        playlist.write_text(f"#EXTM3U\n#EXTINF:36,\n{target}\n#EXT-X-ENDLIST\n")
        resp = _upload(client, key, playlist, name="call.m3u8")
        assert resp.status_code == 415, resp.text
        answers.append(resp.json()["detail"])
    assert answers[0] == answers[1]
    assert not any(word in answers[0] for word in ("nonexistent", "original", "Invalid data", "hls"))


def _wait_final(client: TestClient, key: str, rec_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = client.get(f"/v1/recordings/{rec_id}", headers={"X-API-Key": key}).json()
        if body["status"] in ("done", "failed"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"recording still {body.get('status')} after {timeout} s: {body}")


def test_worker_refuses_what_it_cannot_hold_and_keeps_working(
        client: TestClient, make_tenant, bombs: dict[str, Path], stereo_call: Path) -> None:
    """The worker's own budget (lower than the API's here) fails the bomb with a reason on its first
    attempt; the decoder's memory limit fails a file it cannot decode within it; the same worker
    process then finishes a good call: no crash, no loop."""
    _, key = make_tenant(["customer"])
    env = {"CALLPULSE_MAX_DECODED_BYTES": str(20 * 1024 * 1024)}
    with running_worker("bombs", env=env) as proc:
        bomb = _upload(client, key, bombs["small"])
        assert bomb.status_code == 202, bomb.text
        failed = _wait_final(client, key, bomb.json()["id"])
        assert failed["status"] == "failed" and "too large once decoded" in failed["error"]
        with transaction() as s:
            row = s.get(Recording, uuid.UUID(bomb.json()["id"]))
            assert row is not None and row.attempts == 1
        good = _upload(client, key, stereo_call)
        assert good.status_code == 202, good.text
        assert _wait_final(client, key, good.json()["id"])["status"] == "done"
        assert proc.poll() is None


def test_decoder_out_of_memory_fails_with_a_reason(tmp_path: Path) -> None:
    limits = decode.DecodeLimits(memory_limit_bytes=64 * 1024 * 1024)  # too little to even start
    with pytest.raises(decode.MediaError) as err:
        decode.decode_to_file(EXAMPLE, tmp_path / "audio16k.npy", 16_000, limits=limits)
    assert err.value.status_code == 422 and "needs more memory than allowed" in err.value.reason
    assert not list(tmp_path.iterdir())
