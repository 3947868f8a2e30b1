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


def test_sqlite_reads_do_not_wait_for_a_writer(tmp_path) -> None:
    import time

    from escalator.store.db import read_session

    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    try:
        with engine.begin() as c:
            c.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        writer = engine.connect()
        writer.begin()  # BEGIN IMMEDIATE: holds the write lock
        writer.exec_driver_sql("INSERT INTO t VALUES (1)")
        started = time.monotonic()
        with read_session(engine) as session:
            assert session.execute(sa.text("SELECT count(*) FROM t")).scalar() == 0
        assert time.monotonic() - started < 5.0  # not the 30 s busy timeout
        writer.rollback()
        writer.close()
    finally:
        engine.dispose()


def test_the_sqlite_database_and_its_files_are_private(tmp_path) -> None:
    """Phone numbers, open reply codes and push tokens: 0600 files in a 0700 folder."""
    path = tmp_path / "data" / "escalator.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        migrate.upgrade(engine)
        with engine.connect() as c:
            c.exec_driver_sql("SELECT count(*) FROM contacts").scalar()
            files = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()}
    finally:
        engine.dispose()
    assert files["escalator.db"] == 0o600 and files.get("escalator.db-wal", 0o600) == 0o600
    assert files.get("escalator.db-shm", 0o600) == 0o600 and "escalator.db-wal" in files
    assert path.parent.stat().st_mode & 0o777 == 0o700
    path.chmod(0o644)  # made by an older version: tightened on the next start
    make_engine(f"sqlite:///{path}").dispose()
    assert path.stat().st_mode & 0o777 == 0o600
