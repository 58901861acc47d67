"""INSERT … ON CONFLICT in the bound database's dialect: Postgres and SQLite both speak it, through
different SQLAlchemy constructs. Concurrent writers of one key then never meet an IntegrityError."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

T = TypeVar("T")


def _insert(session: Session, model: type) -> Any:
    return (sqlite if session.get_bind().dialect.name == "sqlite" else postgresql).insert(model)


def insert_ignore(session: Session, model: type, keys: list[str]) -> Any:
    """INSERT … ON CONFLICT (keys) DO NOTHING; add `.values(...)`."""
    return _insert(session, model).on_conflict_do_nothing(index_elements=keys)


def upsert(session: Session, model: type[T], keys: list[str], values: dict[str, Any],
           update: list[str]) -> T:
    """Insert a row or, when its key exists (even one a concurrent request just committed), update
    the `update` columns; returns the row as stored."""
    stmt = _insert(session, model).values(**values)
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in update})
    row = session.scalars(stmt.returning(model), execution_options={"populate_existing": True}).one()
    return cast(T, row)
