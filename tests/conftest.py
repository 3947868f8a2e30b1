"""Shared fixtures: a fresh database per test on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from escalator.cli import app
from escalator.store import migrate
from escalator.store.catalog import Catalog
from escalator.store.db import make_engine

# CI has PostgreSQL on 127.0.0.1:5432 with trust auth and a database `test`; it is required, not optional.
POSTGRES_URL = os.environ.get("ESCALATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[sa.Engine]:
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # a missing database must fail loudly, never skip
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required for the tests: {exc}")
    yield engine
    engine.dispose()


def fresh_postgres_url(admin: sa.Engine) -> tuple[str, str]:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", schema


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'escalator.db'}"
        return
    admin = request.getfixturevalue("postgres_admin")
    url, schema = fresh_postgres_url(admin)
    yield url
    with admin.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def pg_url(postgres_admin: sa.Engine) -> Iterator[str]:
    """An empty PostgreSQL schema, for what only PostgreSQL does (several replicas, row locks)."""
    url, schema = fresh_postgres_url(postgres_admin)
    yield url
    with postgres_admin.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """A migrated database."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog(engine: sa.Engine) -> Catalog:
    return Catalog(engine)


@dataclass
class Cli:
    """The real `escalator` command, run in-process through typer's runner."""

    env: dict[str, str]
    runner: CliRunner

    def __call__(self, *args: str, input: str | None = None):  # noqa: A002
        return self.runner.invoke(app, [str(a) for a in args], env=self.env, input=input)


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The CLI against a fresh, migrated database, run from an empty folder (no stray .env)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for key in list(os.environ):
        if key.startswith("ESCALATOR_"):
            monkeypatch.delenv(key)
    env = {"ESCALATOR_DATABASE_URL": db_url, "ESCALATOR_ACTOR": "tester", "ESCALATOR_DATA_DIR": str(tmp_path / "data")}
    runner = Cli(env, CliRunner())
    result = runner("db", "upgrade")
    assert result.exit_code == 0, result.output
    return runner


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


CONTACTS_YAML = """\
contacts:
  - id: alice
    name: Alice Ng
    phone: "+14155550101"
    push_tokens: ["tok-alice"]
  - id: bob
    name: Bob Okafor
    phone: "+14155550102"
  - id: carol
    name: Carol Diaz
    phone: "+14155550103"
  - id: dave
    name: Dave Push
    push_tokens: ["tok-dave"]
"""

LADDER_YAML = """\
ladder: night
description: nights
timezone: America/Chicago
ack_timeout: 120s
cycles: 0
legs:
  - name: primary
    contacts: [alice]
    channels: [voice, sms, push]
  - name: secondary
    contacts: [bob]
    ack_timeout: 90s
  - name: fallback
    contacts: [carol, bob]
"""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked slow (real outages, crash loops, several replicas: tens of seconds each) start
    first, so that across the parallel workers (pytest-xdist) none is left running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
