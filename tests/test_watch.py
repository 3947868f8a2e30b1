"""`escalator watch` (SPEC §12): driven as a person would, in a real terminal (tmux), beside the real
daemon and a real nats-server; the board's reads on both databases; the plain view off a terminal."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from escalator import clock, ladder_files
from escalator.store import board, migrate
from escalator.store.catalog import Catalog
from escalator.store.db import make_engine
from escalator.store.incidents import IncidentStore, NewIncident
from escalator.walk import Acknowledge
from tests.conftest import Cli, write
from tests.harness import eventually, publish, running_daemon, settings_for
from tests.recording import RecordingChannel
from tests.test_engine import nats_server  # noqa: F401 - fixture

ESCALATOR = str(Path(sys.executable).parent / "escalator")
FILES = """\
contacts:
  - {id: alice, name: Alice, phone: "+14155550101", push_tokens: ["tok-a"]}
  - {id: bob, name: Bob, phone: "+14155550102"}
---
ladder: night
ack_timeout: 120s
legs:
  - {name: primary, contacts: [alice]}
  - {name: secondary, contacts: [bob]}
"""


class Terminal:
    """A program in a real terminal: tmux on a socket of its own, 200×50."""

    def __init__(self, command: list[str], env: dict[str, str]):
        if shutil.which("tmux") is None:
            pytest.fail("tmux is required (Debian package tmux; `make test` installs it)")
        self.socket, self.name = f"esc-{uuid.uuid4().hex[:8]}", "watch"
        line = " ".join(f"{k}={v}" for k, v in env.items()) + " " + " ".join(command)
        # without COLUMNS/LINES from this process (pytest's): the program must measure its terminal
        self.tmux("new-session", "-d", "-s", self.name, "-x", "200", "-y", "50", f"env -u COLUMNS -u LINES {line}")
        self.tmux("set-option", "-t", self.name, "window-size", "manual")
        self.tmux("resize-window", "-t", self.name, "-x", "200", "-y", "50")

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name).stdout

    def press(self, key: str) -> None:
        self.tmux("send-keys", "-t", self.name, key)

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", self.name).returncode == 0

    def close(self) -> None:
        self.tmux("kill-server")


def test_watch_in_a_terminal_shows_a_walk_move_and_quits_on_q(tmp_path: Path, nats_server) -> None:
    db_url = f"sqlite:///{tmp_path / 'escalator.db'}"
    db = make_engine(db_url)
    migrate.upgrade(db)
    Catalog(db).apply(ladder_files.load([write(tmp_path / "f.yaml", FILES)]), "test", clock.now())
    db.dispose()
    env = {"ESCALATOR_DATABASE_URL": db_url, "ESCALATOR_DATA_DIR": str(tmp_path / "cli"), "TERM": "xterm-256color"}
    recorder = RecordingChannel("all")
    screens: dict[str, str] = {}

    async def scenario(term: Terminal):
        async with running_daemon(settings_for(db_url, nats_server.url, tmp_path / "data"), recorder) as daemon:
            await eventually(lambda: "no open incidents" in term.screen(), timeout=20)
            screens["empty"] = term.screen()
            await publish(nats_server.url, "incidents.urgent", {"id": "w-1", "ladder": "night", "summary": "No heat, 12 Elm St"})
            try:
                await eventually(lambda: "alice: voice sent · sms sent · push sent" in term.screen(), timeout=15)
            except AssertionError:
                raise AssertionError(term.screen()) from None
            screens["open"] = term.screen()
            await daemon.engine.acknowledge("w-1", "alice", "sms", "alice")
            await eventually(lambda: "taken by alice (sms)" in term.screen(), timeout=15)
            screens["closed"] = term.screen()
        term.press("q")
        await eventually(lambda: not term.alive(), timeout=10)

    term = Terminal([ESCALATOR, "watch"], env)
    try:
        asyncio.run(scenario(term))
    finally:
        term.close()
    opened = screens["open"]
    assert "1 open" in opened and "w-1" in opened and "No heat, 12 Elm St" in opened and "primary (1)" in opened
    assert "1:5" in opened or "2:00" in opened  # the countdown to the next leg, from 2:00
    closed = screens["closed"]
    assert "0 open" in closed and "no open incidents" in closed and "last closed" in closed and "w-1" in closed


def seed(engine: sa.Engine, tmp_path: Path, opened: int) -> None:
    Catalog(engine).apply(ladder_files.load([write(tmp_path / "f.yaml", FILES)]), "test", clock.now())
    store = IncidentStore(engine)
    t = clock.now() - timedelta(minutes=5)
    for i in range(opened):
        store.open(NewIncident(f"o-{i:03d}", "night", f"Leak {i}"), None, t + timedelta(seconds=i))
    store.open(NewIncident("c-1", "night", "No heat"), None, t)
    store.step("c-1", Acknowledge("alice", "voice", "alice"), t + timedelta(seconds=42))


@pytest.mark.parametrize("opened", [3, 60])
def test_the_board_costs_the_same_few_indexed_queries_however_many_incidents_are_open(engine, tmp_path: Path, opened: int) -> None:
    seed(engine, tmp_path, opened)
    IncidentStore(engine).open(NewIncident("m-1", "night", "Pipe [red]burst[/] at [b]"), None, clock.now())  # markup is text
    opened += 1
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *_: statements.append(statement))
    shown = board.snapshot(engine, clock.now())
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 5, selects  # open count, open incidents, their pages, the closed ones, their acknowledgements
    assert shown.open_count == opened and len(shown.open) == min(opened, board.OPEN_LIMIT)
    assert [o.id for o in shown.open][:2] == ["o-000", "o-001"]  # the oldest first
    from escalator.cli.watch import render
    from rich.console import Console

    out = Console(record=True, width=200, markup=False)
    out.print(render(shown))
    text = out.export_text()
    assert "o-000" in text and (opened > board.OPEN_LIMIT or "Pipe [red]burst[/] at [b]" in text)
    first = shown.open[0]
    assert (first.leg, first.cycle) == ("primary", 1) and {(p.contact, p.channel, p.shown) for p in first.pages} == {
        ("alice", "voice", "sending"), ("alice", "sms", "sending"), ("alice", "push", "sending"),
    }
    (closed,) = shown.closed
    assert (closed.id, closed.by, closed.channel, closed.took_s) == ("c-1", "alice", "voice", 42.0)


def test_off_a_terminal_watch_prints_a_plain_board(cli: Cli, tmp_path: Path) -> None:
    engine = make_engine(cli.env["ESCALATOR_DATABASE_URL"])
    try:
        seed(engine, tmp_path, 2)
    finally:
        engine.dispose()
    result = cli("watch", "--once")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "\x1b[" not in text  # no escape codes in a pipe
    assert "2 open" in text and "o-000" in text and "alice: voice sending" in text
    assert "taken by alice (voice)" in text and "0:42" in text
    assert "o-000" not in cli("watch", "--once", "--ladder", "day").stdout
