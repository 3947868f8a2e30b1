"""SQLModel tables. Snapshots are the canonical documents of `escalator.ladders`.

Versions are immutable rows: an incident pins (ladder, version) and can always read what it
started on, whatever happens to the ladder afterwards. Deletions and removals are versions too
(with no snapshot), so history and rollback cover them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC in and out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the database")
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _ts(nullable: bool = False) -> Any:
    return Field(sa_type=UTCDateTime, nullable=nullable)


class ContactRow(SQLModel, table=True):
    __tablename__ = "contacts"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=100)
    phone: str | None = Field(default=None, max_length=16)
    push_tokens: list[str] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)
    version: int
    removed_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts()
    updated_by: str = Field(max_length=200)


class ContactVersionRow(SQLModel, table=True):
    __tablename__ = "contact_versions"

    contact_id: str = Field(primary_key=True, foreign_key="contacts.id", max_length=64)
    version: int = Field(primary_key=True)
    snapshot: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON, nullable=True)
    actor: str = Field(max_length=200)
    created_at: datetime = _ts()
    change: str
    comment: str | None = None


class LadderRow(SQLModel, table=True):
    __tablename__ = "ladders"

    name: str = Field(primary_key=True, max_length=64)
    version: int
    deleted_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts()
    updated_by: str = Field(max_length=200)


class LadderVersionRow(SQLModel, table=True):
    __tablename__ = "ladder_versions"

    ladder: str = Field(primary_key=True, foreign_key="ladders.name", max_length=64)
    version: int = Field(primary_key=True)
    snapshot: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON, nullable=True)
    actor: str = Field(max_length=200)
    created_at: datetime = _ts()
    change: str
    comment: str | None = None


metadata = SQLModel.metadata
