"""Media sweep: files under the media directory that nothing will ever read again. Two kinds are
left behind by crashes rather than by any code path, so only a sweep over the disk finds them:

- an orphan folder: the API writes an upload before it commits the row (so a worker that takes the
  message at once finds the file), and an API killed in between never runs its cleanup; a DELETE
  or retention pass that died between its commit and the removal leaves one too. A folder with no
  recording row, untouched for ``media_grace_s``, is removed with everything in it;
- the decoded cache (``audio16k.npy``, ~115 MB for a 30-minute call) or a live call's growing
  sample file of a call that is already final: a late duplicate infer message (redelivered after
  its worker died, or re-driven once too often) decodes the media again after the call completed,
  and completion, which drops the cache, has already happened. Removed when the call is final, no
  live lease covers it (a rescore reopens the call and holds one) and the file is older than the
  grace period.

Only ``<tenant uuid>/<recording uuid>`` folders are considered: nothing else under the media
directory is ours to judge. A media directory belongs to one database: a second deployment (or a
benchmark with its own database) pointed at the same directory would see its folders as orphans.
The original media of a recording that exists is never touched here (retention owns that)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from callpulse.settings import Settings
from db.models import Recording, RecordingStatus, utcnow
from db.recovery_models import WorkLease
from db.session import transaction
from worker.pipeline.media import audio_store, live_audio

log = logging.getLogger(__name__)

_BATCH = 1000


@dataclass
class MediaSweepCounts:
    orphans_removed: int = 0
    caches_removed: int = 0


def _uuid(name: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(name)
    except ValueError:
        return None


def _newest_mtime(folder: Path) -> float:
    """The latest change in the folder or any file directly in it (an upload being written keeps
    its file's mtime moving; the folder's own mtime only changes when entries come and go)."""
    newest = folder.lstat().st_mtime
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
            except FileNotFoundError:
                continue
    return newest


def _settled_folders(root: Path, grace_s: float) -> dict[uuid.UUID, Path]:
    """Recording folders nobody has written to for grace_s, by recording id."""
    found: dict[uuid.UUID, Path] = {}
    if not root.is_dir():
        return found
    cutoff = time.time() - grace_s
    with os.scandir(root) as tenants:
        tenant_dirs = [Path(t.path) for t in tenants if t.is_dir(follow_symlinks=False) and _uuid(t.name)]
    for tenant_dir in tenant_dirs:
        try:
            with os.scandir(tenant_dir) as recs:
                rec_dirs = [(rid, Path(r.path)) for r in recs
                            if r.is_dir(follow_symlinks=False) and (rid := _uuid(r.name)) is not None]
        except FileNotFoundError:
            continue
        for rec_id, folder in rec_dirs:
            try:
                if _newest_mtime(folder) < cutoff:
                    found[rec_id] = folder
            except FileNotFoundError:
                continue
    return found


def _drop_decoded(folder: Path) -> bool:
    """Remove what only the pipeline reads; True when there was something. A live call's sample
    file goes only once its WAV exists: before that it is the call's only audio."""
    cache = folder / audio_store.CACHE_NAME
    live = folder / live_audio.LIVE_NAME
    dropped = False
    if cache.exists():
        cache.unlink(missing_ok=True)
        dropped = True
    if live.exists() and (folder / "original.wav").exists():
        live_audio.remove_live(folder)
        dropped = True
    return dropped


def sweep_media(settings: Settings) -> MediaSweepCounts:
    counts = MediaSweepCounts()
    folders = _settled_folders(settings.resolved_media_dir, settings.media_grace_s)
    ids = list(folders)
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start:start + _BATCH]
        now = utcnow()
        with transaction() as s:
            statuses = dict(s.execute(select(Recording.id, Recording.status)
                                      .where(Recording.id.in_(chunk))).tuples().all())
            leased = set(s.scalars(select(WorkLease.recording_id).where(
                WorkLease.recording_id.in_(chunk), WorkLease.expires_at >= now)))
        for rec_id in chunk:
            folder = folders[rec_id]
            status = statuses.get(rec_id)
            if status is None:
                # Checked again just before removing: the row may have been committed since (an
                # upload slower than the grace period commits only after its last byte).
                with transaction() as s:
                    if s.get(Recording, rec_id) is not None:
                        continue
                audio_store.remove_dir(folder)
                counts.orphans_removed += 1
            elif RecordingStatus(status).is_final and rec_id not in leased and _drop_decoded(folder):
                counts.caches_removed += 1
    if counts.orphans_removed or counts.caches_removed:
        log.warning("media sweep: removed %d orphan media folder(s) (no recording row) and the decoded "
                    "cache of %d final call(s)", counts.orphans_removed, counts.caches_removed)
    return counts
