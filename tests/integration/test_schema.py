"""The schema comes only from Alembic: migrations must build exactly what the models declare,
on Postgres (production) and on SQLite (the embedded mode)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from db.migrate import upgrade
from db.models import Base


def _diff(url: str) -> list:
    engine = create_engine(url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    return diff


def test_postgres_migrations_match_models(database: str) -> None:
    assert _diff(database) == []


def test_sqlite_fresh_upgrade_matches_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"tenant", "api_key", "recording", "segment", "prediction", "alembic_version"} <= tables
    assert _diff(url) == []
