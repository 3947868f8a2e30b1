"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from escalator.store import migrate
from escalator.store.db import make_engine
from escalator.store.tables import metadata


def test_upgrade_empty_database_then_models_and_migrations_agree(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert migrate.current_revision(engine) is None
        before, after = migrate.upgrade(engine)
        assert (before, after) == (None, migrate.head_revision(engine))
        assert set(sa.inspect(engine).get_table_names()) >= {"contacts", "contact_versions", "ladders", "ladder_versions"}
        with engine.connect() as connection:
            diff = compare_metadata(
                MigrationContext.configure(connection, opts={"compare_type": True}), metadata
            )
        assert diff == [], f"models and migrations disagree: {diff}"
        assert migrate.upgrade(engine) == (after, after)  # idempotent
        migrate.require_current(engine)
    finally:
        engine.dispose()


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    try:
        with engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10000
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_migrations_ship_inside_the_package_layout() -> None:
    folder = migrate.migrations_dir()
    assert (folder / "env.py").is_file() and list((folder / "versions").glob("0001_*.py"))
