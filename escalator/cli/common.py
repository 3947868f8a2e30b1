"""What every CLI command shares: settings, the catalog, options, and output for people or machines."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from typer.core import TyperGroup

from escalator.errors import EscalatorError, InvalidInput, Problem
from escalator.settings import Settings, load_settings
from escalator.store.catalog import Catalog
from escalator.store.incidents import IncidentStore
from escalator.store.db import make_engine, unreachable
from escalator.store.migrate import require_current


class EscalatorGroup(TyperGroup):
    """Turns our errors into SPEC §7's exit statuses and one line per reason on stderr."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EscalatorError as exc:
            problems = exc.problems if isinstance(exc, InvalidInput) else [Problem(str(exc))]
            for problem in problems:
                typer.echo(f"escalator: {problem}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except DBAPIError as exc:
            state = ctx.find_object(CliState)
            url = state.settings.database if state else "database"
            typer.echo(f"escalator: {unreachable(exc, url)}", err=True)
            raise typer.Exit(1) from None


@dataclass
class CliState:
    """Built lazily, so `--help` and file-only commands never touch settings or the database."""

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database)

    @cached_property
    def schema_checked(self) -> Engine:
        """The engine, once the database is known to be reachable and at this version's schema."""
        try:
            require_current(self.engine)
        except DBAPIError as exc:
            raise unreachable(exc, self.settings.database) from None
        return self.engine

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.schema_checked)

    @cached_property
    def incidents(self) -> IncidentStore:
        return IncidentStore(self.schema_checked)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_object(CliState)
    if obj is None:  # a sub-app invoked on its own (tests)
        obj = ctx.ensure_object(CliState)
    return obj


def actor_of(ctx: typer.Context, actor: str | None) -> str:
    return actor or state(ctx).settings.default_actor()


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of a table.")]
ActorOpt = Annotated[
    str | None, typer.Option("--actor", help="Who makes this change (default: ESCALATOR_ACTOR, else the OS user).")
]
CommentOpt = Annotated[str | None, typer.Option("--comment", "-m", help="Why: kept with the version in the history.")]


def console() -> Console:
    """Output for people. markup=False: text from incidents, ladders and contacts is printed as it
    is, never read as Rich markup (a summary holding `[/]` must not crash a command, nor `[red]`
    colour it). Styles are given as Text objects (`styled`)."""
    return Console(
        file=sys.stdout, highlight=False, markup=False, emoji=False, soft_wrap=False,
        width=None if sys.stdout.isatty() else 120,
    )


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line of plain strings and (text, style) pairs; no markup is parsed from any of them."""
    return Text.assemble(*parts)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def when(moment: datetime, timezone: str = "UTC") -> str:
    """A time for people, in the ladder's zone, with the zone named."""
    local = moment.astimezone(ZoneInfo(timezone))
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or timezone)


def write_out(text: str, output: Any) -> None:
    """An export: to the file given (`--output`), else stdout."""
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)


def history_table(versions: Any, stamp: Any = None) -> Table:
    """Every version of a ladder or schedule, in the time zone of its latest definition."""
    zone = next((v.definition.timezone for v in reversed(versions) if v.definition), "UTC")
    table = Table("version", "when", "by", "change", "comment")
    for v in versions:
        table.add_row(str(v.version), (stamp or when)(v.created_at, zone), v.actor, v.change, v.comment or "")
    return table


def split_list(raw: str | None) -> list[str] | None:
    """`a, b,c` → ['a', 'b', 'c']; None stays None (the option was not given)."""
    if raw is None:
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]
