"""`escalator db …`: the schema."""

from __future__ import annotations

import typer

from escalator.cli.common import print_json, state, JsonOpt
from escalator.store import migrate
from escalator.store.db import display_url

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command()
def upgrade(ctx: typer.Context, revision: str = typer.Option("head", help="Target revision.")) -> None:
    """Create or upgrade the schema (safe to run on every deploy)."""
    st = state(ctx)
    before, after = migrate.upgrade(st.engine, revision)
    where = display_url(st.settings.database)
    if before == after:
        typer.echo(f"{where}: schema already at {after}")
    else:
        typer.echo(f"{where}: schema upgraded {before or 'empty'} → {after}")


@app.command()
def current(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show the schema revision of the database and the one this escalator needs."""
    st = state(ctx)
    cur, head = migrate.current_revision(st.engine), migrate.head_revision(st.engine)
    if as_json:
        print_json({"database": display_url(st.settings.database), "current": cur, "head": head})
    else:
        status = "up to date" if cur == head else "needs `escalator db upgrade`"
        typer.echo(f"{display_url(st.settings.database)}: at {cur or 'empty'}, head {head} ({status})")
