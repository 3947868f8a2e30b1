"""`escalator heartbeat list|forget` (SPEC §11): the publishers known from their heartbeats."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from escalator import clock, heartbeats
from escalator.cli.common import JsonOpt, console, print_json, state, when
from escalator.errors import InvalidInput, Problem
from escalator.ladders import format_duration
from escalator.store import heartbeats as store

app = typer.Typer(help="Publishers known from their heartbeats: a silent one opens an incident.", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Each source, its interval, last heartbeat and state (ok, late, silent)."""
    rows = store.known(state(ctx).schema_checked)
    now = clock.now()
    if as_json:
        print_json([
            {"source": r.source, "interval_s": r.interval_s, "last_at": r.last_at, "first_at": r.first_at,
             "state": heartbeats.state_of(r, now), "incident": r.incident_id}
            for r in rows
        ])
        return
    if not rows:
        console().print("no heartbeat sources yet: a publisher becomes known with its first `incidents.heartbeat`")
        return
    table = Table("source", "interval", "last heartbeat", "state", "incident")
    for r in rows:
        table.add_row(r.source, format_duration(r.interval_s), when(r.last_at), heartbeats.state_of(r, now), r.incident_id or "—")
    console().print(table)


@app.command("forget")
def forget(ctx: typer.Context, source: Annotated[str, typer.Argument(help="The source to retire.", show_default=False)]) -> None:
    """Retire a source: its silence no longer opens incidents (its next heartbeat makes it known again)."""
    try:
        forgotten = store.forget(state(ctx).schema_checked, source)
    except store.SilenceOpen as exc:
        raise InvalidInput(Problem(
            f"heartbeat source {source!r} is silent and incident {exc} is open: resolve it first (`escalator incident resolve {exc}`)",
            field="source",
        )) from None
    if not forgotten:
        raise InvalidInput(Problem(f"no heartbeat source {source!r} (see `escalator heartbeat list`)", field="source"))
    typer.echo(f"heartbeat source {source}: forgotten")
