"""The fixtures that need the real services: a fresh Postgres database migrated by Alembic and
Redis (a dedicated db index) as the Celery broker. Loaded as a plugin by tests/conftest.py, so there
is one session database however many tiers run; only the integration and e2e tiers use it
(their conftest.py requests `database` for every test), never the unit tier."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import PG_ADMIN_URL, TEST_BROKER, TEST_DB, TEST_URL


def _admin_exec(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    """A fresh database per test run, built only through the Alembic migrations."""
    from db.migrate import upgrade

    _admin_exec(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')
    _admin_exec(f'CREATE DATABASE "{TEST_DB}"')
    upgrade(TEST_URL)
    yield TEST_URL
    from db.session import get_engine

    get_engine().dispose()
    _admin_exec(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(TEST_BROKER)
    client.flushdb()
    yield TEST_BROKER
    client.flushdb()


@pytest.fixture
def make_tenant():
    """Creates a tenant with an API key; returns (tenant_id, key)."""
    from db.queries.tenants import create_api_key, create_tenant
    from db.session import transaction

    def _make(roles: list[str] | None = None) -> tuple[uuid.UUID, str]:
        with transaction() as s:
            tenant = create_tenant(s, f"t-{uuid.uuid4().hex[:10]}", roles)
            _, key = create_api_key(s, tenant.id, "test")
            return tenant.id, key

    return _make


