"""`escalator watch` (SPEC §12): a live board of the open incidents and the last closed ones.

Redrawn every second from the database (escalator.store.board), so it works beside any replica.
On a terminal it is a full-screen `rich` Live view; `q` or Ctrl-C quits and gives the terminal back
as it was. When stdout is not a terminal (a pipe, a log) it prints the board as a plain table every
second instead (`--once`: one board, then exit).
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from escalator import clock
from escalator.cli.common import state
from escalator.ladders import Identifier, validate_value
from escalator.store import board as board_
from escalator.store.board import Board


def watch(
    ctx: typer.Context,
    ladder: Annotated[str | None, typer.Option("--ladder", help="Only this ladder's incidents.")] = None,
    interval: Annotated[float, typer.Option("--interval", min=0.2, max=60, help="Seconds between redraws.")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Print the board once and exit.")] = False,
) -> None:
    """A live board of the open incidents (each person paged and how each page stands, a countdown to
    the next leg) and the last 10 closed ones (who took them, how, how fast). `q` or Ctrl-C quits."""
    if ladder is not None:
        ladder = validate_value(Identifier, ladder, "--ladder")
    engine = state(ctx).schema_checked
    read = lambda: board_.snapshot(engine, clock.now(), ladder)  # noqa: E731
    if once or not sys.stdout.isatty():
        plain(read, interval, once)
        return
    live(read, interval)


def plain(read, interval: float, once: bool) -> None:
    """Not a terminal: the board as plain text, again every `interval` seconds."""
    # markup=False: text from incidents is shown as it is, never read as Rich markup (cli.common.console)
    out = Console(force_terminal=False, no_color=True, width=160, highlight=False, markup=False, emoji=False)
    try:
        while True:
            out.print(render(read()))
            sys.stdout.flush()
            if once:
                return
            time.sleep(interval)
            out.print()
    except KeyboardInterrupt:
        return


def live(read, interval: float) -> None:
    console = Console(highlight=False, markup=False, emoji=False)
    try:
        with _keys() as key, Live(render(read()), console=console, screen=True, auto_refresh=False) as view:
            while True:
                pressed = key(interval)
                if pressed in ("q", "Q"):
                    return
                view.update(render(read()), refresh=True)
    except KeyboardInterrupt:
        return


@contextlib.contextmanager
def _keys() -> Iterator:
    """Single key presses from the terminal (cbreak: no Enter needed; Ctrl-C still interrupts), the
    terminal's settings restored on the way out whatever happens."""
    fd = sys.stdin.fileno() if sys.stdin.isatty() else None
    saved = None
    if fd is not None:
        import termios
        import tty

        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)

    def key(timeout: float) -> str | None:
        if fd is None:
            time.sleep(timeout)
            return None
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else None

    try:
        yield key
    finally:
        if fd is not None and saved is not None:
            import termios

            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def render(board: Board) -> Group:
    """The board as `rich` renderables: a title line, the open incidents, the last closed ones."""
    now = board.at
    scope = f" · ladder {board.ladder}" if board.ladder else ""
    shown = f" (the oldest {len(board.open)} shown)" if board.open_count > len(board.open) else ""
    title = Text.assemble(("escalator watch", "bold"), f" · {now.strftime('%Y-%m-%d %H:%M:%S')} UTC{scope} · ",
                          (f"{board.open_count} open{shown}", "bold red" if board.open_count else "green"), " · q quits")
    opened = Table("incident", "summary", "ladder", "leg (cycle)", "next leg in", "paging", expand=True, title="open")
    for o in board.open:
        people: dict[str, list[str]] = {}
        for p in o.pages:
            people.setdefault(p.contact, []).append(f"{p.channel} {p.shown}")
        paging = "\n".join(f"{who}: " + " · ".join(states) for who, states in people.items()) or "—"
        countdown = _clock((o.deadline - now).total_seconds()) if o.deadline else "exhausted"
        opened.add_row(o.id, o.summary, o.ladder, f"{o.leg} ({o.cycle})", countdown, paging)
    closed = Table("incident", "summary", "ladder", "outcome", "how fast", "closed", expand=True, title="last closed")
    for c in board.closed:
        if c.by and c.took_s is not None:
            outcome = f"taken by {c.by}" + (f" ({c.channel})" if c.channel else "") + (" · resolved" if c.status == "resolved" else "")
            fast = _clock(c.took_s)
        else:
            outcome, fast = c.status, "—"
        closed.add_row(c.id, c.summary, c.ladder, outcome, fast, _ago(now, c.closed_at))
    return Group(title, opened if board.open else Text("no open incidents", style="green"),
                 closed if board.closed else Text("nothing closed yet"))


def _ago(now: datetime, then: datetime) -> str:
    return _clock((now - then).total_seconds()) + " ago"
