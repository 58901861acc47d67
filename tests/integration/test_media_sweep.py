"""The media sweep removes what crashes leave on the media volume and nothing else: the folder of an
upload whose API was killed before its commit (tests/integration/test_api_killed_mid_upload.py
performs that kill), and the decoded cache a late duplicate infer task re-created for a call that is
already final. Folders still being written, folders of recordings in progress or held by a lease, a
final call's original media and folders that are not ours stay."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

from callpulse.settings import Settings
from db.models import Recording, utcnow
from db.recovery_models import WorkLease
from db.session import transaction
from worker.pipeline.media import audio_store
from worker.stages.media_sweep import sweep_media

GRACE_S = 0.5


def _age(folder: Path, seconds: float = 60.0) -> None:
    """Make a folder and its files look untouched for ``seconds``."""
    past = time.time() - seconds
    for path in [*folder.iterdir(), folder]:
        os.utime(path, (past, past))


def _folder(root: Path, tenant_id: uuid.UUID, rec_id: uuid.UUID, *names: str) -> Path:
    folder = audio_store.recording_dir(root, tenant_id, rec_id)
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"x" * 16)
    return folder


def _row(tenant_id: uuid.UUID, root: Path, status: str) -> uuid.UUID:
    with transaction() as s:
        rec = Recording(tenant_id=tenant_id, filename="call.wav", status=status, media_uri="")
        s.add(rec)
        s.flush()
        rec.media_uri = str(audio_store.media_path(root, tenant_id, rec.id, ".wav"))
        return rec.id


def test_orphans_and_caches_of_final_calls_go_and_nothing_else(make_tenant, tmp_path: Path) -> None:
    tenant_id, _ = make_tenant()
    settings = Settings(media_dir=tmp_path, media_grace_s=GRACE_S)
    cache = audio_store.CACHE_NAME
    orphan = _folder(tmp_path, tenant_id, uuid.uuid4(), "original.wav")
    uploading = _folder(tmp_path, tenant_id, uuid.uuid4(), "original.wav")  # written just now
    done_id, running_id, rescoring_id = (_row(tenant_id, tmp_path, status)
                                         for status in ("done", "analyzing", "done"))
    done = _folder(tmp_path, tenant_id, done_id, "original.wav", cache)
    running = _folder(tmp_path, tenant_id, running_id, "original.wav", cache)
    rescoring = _folder(tmp_path, tenant_id, rescoring_id, "original.wav", cache)
    not_ours = tmp_path / "exports" / "report"
    not_ours.mkdir(parents=True)
    (not_ours / "x.csv").write_text("x")
    with transaction() as s:
        s.add(WorkLease(id=uuid.uuid4(), recording_id=rescoring_id, stage="rescore", node="w@h", boot="b",
                        claimed_at=utcnow(), expires_at=utcnow() + timedelta(minutes=1)))
    for folder in (orphan, done, running, rescoring, not_ours):
        _age(folder)

    counts = sweep_media(settings)
    assert (counts.orphans_removed, counts.caches_removed) == (1, 1)
    assert not orphan.exists()
    assert (uploading / "original.wav").exists()
    assert (done / "original.wav").exists() and not (done / cache).exists()
    assert (running / cache).exists() and (rescoring / cache).exists()
    assert (not_ours / "x.csv").exists()
    assert sweep_media(settings) == type(counts)()  # nothing left to do
