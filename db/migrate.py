"""Run Alembic from code (used by `callpulse migrate`, the embedded mode and the tests)."""

from __future__ import annotations

import warnings
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import SAWarning

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    with warnings.catch_warnings():
        # Alembic's batch mode reflects the recording table on SQLite, which cannot reflect the
        # expression indexes on metadata->>'agent'/'queue'; the columns are added in place and the
        # indexes stay, so the warning tells a new user of `callpulse analyze` nothing true.
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection of expression-based index",
                                category=SAWarning)
        command.upgrade(alembic_config(database_url), revision)
