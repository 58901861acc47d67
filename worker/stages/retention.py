"""Retention: delete what a tenant's `media_retention_days` / `data_retention_days` has expired.

Run by beat (callpulse.apply_retention, every CALLPULSE_RETENTION_INTERVAL_S) or once with
`callpulse retention`. Expired data goes exactly as DELETE /v1/recordings/{id} removes it (the row,
and through ON DELETE CASCADE its segments, predictions, alerts, corrections, ...; then its files);
expired media only loses its files, its analysis stays and `media_deleted_at` says when.

Each batch commits before any file is removed, as the API does: a failed commit must not leave a
row whose media is gone. A folder that cannot be removed afterwards stays as an orphan; the row is
already gone or marked."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from callpulse import metrics
from callpulse.settings import Settings
from db.queries import recordings as recordings_q
from db.queries import retention as q
from db.session import transaction
from worker.pipeline.media import audio_store

log = logging.getLogger(__name__)


@dataclass
class RetentionCounts:
    media_deleted: int = 0
    recordings_deleted: int = 0


def apply_retention(settings: Settings, now: datetime | None = None) -> RetentionCounts:
    """One pass over every tenant with a retention setting; at most settings.retention_batch rows
    per tenant and kind, so a first run over years of calls spreads over several passes."""
    now = now or datetime.now(UTC)
    counts = RetentionCounts()
    with transaction() as s:
        tenants = q.tenants_with_retention(s)
    for tenant_id, media_days, data_days in tenants:
        deleted = _delete_recordings(settings, tenant_id, data_days, now) if data_days else 0
        purged = _delete_media(settings, tenant_id, media_days, now) if media_days else 0
        if deleted or purged:
            log.info("retention: tenant %s: %d recording(s) deleted (older than %s days), media of %d "
                     "recording(s) deleted (older than %s days)", tenant_id, deleted, data_days, purged,
                     media_days)
        counts.recordings_deleted += deleted
        counts.media_deleted += purged
        metrics.RETENTION_DELETED.labels("recording").inc(deleted)
        metrics.RETENTION_DELETED.labels("media").inc(purged)
    return counts


def _delete_recordings(settings: Settings, tenant_id: uuid.UUID, days: int, now: datetime) -> int:
    with transaction() as s:
        ids = q.expired_recordings(s, tenant_id, days, now, settings.retention_batch)
        for rec_id in ids:
            recordings_q.delete_recording(s, tenant_id, rec_id)
    _remove_files(settings, tenant_id, ids)
    return len(ids)


def _delete_media(settings: Settings, tenant_id: uuid.UUID, days: int, now: datetime) -> int:
    with transaction() as s:
        ids = q.expired_media(s, tenant_id, days, now, settings.retention_batch)
        if ids:
            q.mark_media_deleted(s, ids, now)
    _remove_files(settings, tenant_id, ids)
    return len(ids)


def _remove_files(settings: Settings, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> None:
    # Only the folder under the media directory: the embedded mode's media_uri points at the
    # user's own file, which is never ours to delete.
    for rec_id in ids:
        audio_store.remove_recording_files(settings.resolved_media_dir, tenant_id, rec_id)
