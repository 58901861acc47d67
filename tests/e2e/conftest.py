"""The end-to-end tier: real `callpulse worker` processes, API servers, the browser and model
backends reached through a worker, on the real Postgres and Redis. Every test here gets the
session's migrated database."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _database(database: str) -> str:
    return database
