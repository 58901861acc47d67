"""Migration 0008 rewrites who set each stored correction: "name (cpk_XXXXXXXX…)" held eight
characters of the key's secret; afterwards it is the key's name and the start of its public id.
Run on SQLite (the embedded mode's database), from the revision before 0008 with real rows."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from db.migrate import upgrade

NOW = "2026-12-01 10:00:00.000000"


def test_stored_corrections_lose_the_secret_prefix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0009")  # 0008's parent: the schema as it was before
    tenant, key, rec = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    kept, orphan = uuid.uuid4(), uuid.uuid4()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenant (id, name, analyzed_roles, analyze_unknown_roles, created_at) "
                          "VALUES (:id, 'acme', '[\"customer\"]', 1, :now)"), {"id": tenant.hex, "now": NOW})
        conn.execute(text("INSERT INTO api_key (id, tenant_id, name, key_hash, prefix, created_at) "
                          "VALUES (:id, :t, 'supervisor', :h, 'cpk_SECRET12', :now)"),
                     {"id": key.hex, "t": tenant.hex, "h": "0" * 64, "now": NOW})
        conn.execute(text(
            "INSERT INTO recording (id, tenant_id, filename, media_uri, size_bytes, container, has_video, "
            "channels, channel_roles, metadata, status, attempts, created_at, updated_at) VALUES "
            "(:id, :t, 'a.wav', '/x', 1, 'wav', 0, 1, '{}', '{}', 'done', 0, :now, :now)"),
            {"id": rec.hex, "t": tenant.hex, "now": NOW})
        for index, segment in enumerate((kept, orphan)):
            conn.execute(text(
                "INSERT INTO segment (id, recording_id, \"index\", channel, speaker, role, start_s, end_s, "
                "acoustics, analyzed) VALUES (:id, :r, :i, 0, 's', 'customer', 0, 1, '{}', 1)"),
                {"id": segment.hex, "r": rec.hex, "i": index})
        for segment, who, key_id in ((kept, "supervisor (cpk_SECRET12…)", key.hex),
                                     (orphan, "old key (cpk_OTHER123…)", None)):
            conn.execute(text(
                "INSERT INTO segment_label (segment_id, tenant_id, label, labeled_by, api_key_id, "
                "created_at, updated_at) VALUES (:s, :t, 'angry', :who, :k, :now, :now)"),
                {"s": segment.hex, "t": tenant.hex, "who": who, "k": key_id, "now": NOW})
    upgrade(url)
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT segment_id, labeled_by FROM segment_label")).all())
        sessions = conn.execute(text("SELECT count(*) FROM dashboard_session")).scalar()
    engine.dispose()
    assert rows[kept.hex] == f"supervisor (key {key.hex[:8]})"
    assert rows[orphan.hex] == "old key (deleted key)"
    assert all("cpk_" not in who for who in rows.values())
    assert sessions == 0
