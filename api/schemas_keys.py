"""Request and response bodies of /v1/keys. A key's secret appears in exactly one body: the answer
to its creation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Scope = Literal["read", "write", "admin"]


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    scope: Scope
    created_at: datetime
    last_used_at: datetime | None = Field(None, description="To the minute; null if never used")
    revoked_at: datetime | None = None


class KeyList(BaseModel):
    items: list[KeyOut]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, description="A label for people: who or what uses the key")
    scope: Scope = Field("write", description="read: look only; write: also change data; admin: also "
                         "manage keys")

    @field_validator("name")
    @classmethod
    def _storable(cls, value: str) -> str:
        if "\x00" in value:  # Postgres text refuses NUL: a 422 here, not a 500 at the INSERT
            raise ValueError("name contains a NUL character")
        return value


class KeyCreated(KeyOut):
    key: str = Field(description="The secret itself, shown this once; only its hash is stored")
