"""Engines for SQLite (the single-replica default) and PostgreSQL (production).

SQLite with pysqlite's defaults loses updates under concurrent read-modify-write (NOTES), so
every SQLite connection runs in autocommit at the driver level and each transaction starts with
`BEGIN IMMEDIATE`: writers queue on the busy timeout instead of overwriting each other.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from escalator.errors import EscalatorError

BUSY_TIMEOUT_S = 30
READ_ONLY = "escalator_read_only"
# Serialises ladder/contact writes on PostgreSQL (SQLite's BEGIN IMMEDIATE already does). Catalog
# edits are rare human actions, so one lock for all of them is simpler and obviously correct.
CATALOG_LOCK_KEY = 0x65736361  # "esca"


def display_url(url: str) -> str:
    """A database URL safe to print: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def make_engine(url: str, **kwargs: Any) -> Engine:
    # hide_parameters: SQL errors would otherwise carry phone numbers, codes and tokens into logs.
    kwargs.setdefault("hide_parameters", True)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    # TCP keepalives: a connection to a server that vanished (a partition, not a clean close) is
    # found dead within about 25 s instead of the kernel's two hours.
    keepalive = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
    kwargs["connect_args"] = {**keepalive, **kwargs.get("connect_args", {})}
    return sa.create_engine(parsed, pool_pre_ping=True, **kwargs)


def _sqlite_engine(url: sa.URL, **kwargs: Any) -> Engine:
    if url.database and url.database != ":memory:":
        private_file(Path(url.database).expanduser())
    engine = sa.create_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}, **kwargs
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # Writers take the lock up front; pure reads (read_session, readiness) must not queue behind them.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def private_file(path: Path) -> None:
    """The SQLite database holds phone numbers, open reply codes and push tokens: it is created
    0600 in a folder created 0700, and an existing one readable by others is made 0600. SQLite
    gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    for extra in ("-wal", "-shm"):
        side = path.with_name(path.name + extra)
        if side.exists() and side.stat().st_mode & 0o077:
            side.chmod(0o600)


@contextmanager
def write_session(engine: Engine, *, catalog: bool = False) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back on any exception."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        if catalog and engine.dialect.name == "postgresql":
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": CATALOG_LOCK_KEY})
        yield session


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A read-only transaction (on SQLite a plain BEGIN, which takes no write lock)."""
    with Session(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False) as session, session.begin():
        yield session


def single_replica_lock(url: str) -> IO[str] | None:
    """SQLite: at most one `escalator run` per database file, held by an OS file lock for the life of
    the process (a kill -9 releases it). Several replicas need PostgreSQL. None for PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    path = Path(parsed.database).expanduser().resolve()
    handle = os.fdopen(os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+")  # kept open: the lock lives with it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise EscalatorError(
            f"another escalator is already running on the SQLite database {path} ({holder}); SQLite supports one "
            "replica. To run several, point every replica at one PostgreSQL (ESCALATOR_DATABASE_URL=postgresql+psycopg://…)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def unreachable(exc: Exception, url: str) -> EscalatorError:
    reason = " ".join(str(getattr(exc, "orig", exc) or exc).split())
    return EscalatorError(f"database {display_url(url)} is unreachable: {reason[:300]}")
