"""The integration tier: tests against the real Postgres and Redis (no worker process, no browser).
Every test here gets the session's migrated database."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _database(database: str) -> str:
    return database
