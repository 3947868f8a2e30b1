"""Alembic, run from code: `escalator db upgrade` and the start-up schema check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from escalator.errors import EscalatorError


def migrations_dir() -> Path:
    """Inside the wheel (`escalator/_migrations`), or `migrations/` at the top of a checkout."""
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    raise EscalatorError("cannot find the migrations folder (is escalator installed correctly?)")


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = engine
    return config


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the schema; returns (revision before, revision after)."""
    before = current_revision(engine)
    command.upgrade(alembic_config(engine), revision)
    return before, current_revision(engine)


def require_current(engine: Engine) -> None:
    """Refuse to work on a database whose schema is missing or not at this version's head."""
    current, head = current_revision(engine), head_revision(engine)
    if current is None:
        raise EscalatorError("the database has no escalator schema yet: run `escalator db upgrade`")
    if current != head:
        raise EscalatorError(
            f"the database schema is at revision {current}, this escalator needs {head}: run `escalator db upgrade`"
        )
