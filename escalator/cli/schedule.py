"""`escalator schedule …`, `escalator cover …` and `escalator oncall` (SPEC §10): who is on call."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import click
import typer
from rich.table import Table
from typer.core import TyperGroup

from escalator import clock, ladder_files, oncall, walk
from escalator.cli.checks import overrides_of, warn_gaps
from escalator.cli.common import (
    ActorOpt, CommentOpt, JsonOpt, actor_of, console, history_table, print_json, state, styled, write_out,
)
from escalator.errors import InvalidInput, Problem
from escalator.ladders import Identifier, validate_value
from escalator.schedules import parse_span, parse_when
from escalator.store.catalog import Override, ScheduleVersion
from escalator.store.incidents import build_plan

app = typer.Typer(help="Inspect schedules: who is on call, when, and the gaps.", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The schedule's name.", show_default=False)]
AtOpt = Annotated[str, typer.Option("--at", help="now, HH:MM (the next one), or a date-time (without offset: the schedule's zone).")]


def _stamp(moment: datetime, timezone: str) -> str:
    local = moment.astimezone(ZoneInfo(timezone))
    return local.strftime("%a %Y-%m-%d %H:%M ") + (local.tzname() or timezone)


def _who(people: list[oncall.OnCall]) -> str:
    return ", ".join(p.contact + (f" (override {p.override})" if p.override else f" ({p.rotation})") for p in people) or "nobody"


# -- reading -----------------------------------------------------------------------------------------


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List schedules with their current version and who is on call now."""
    catalog = state(ctx).catalog
    now = clock.now()
    versions = catalog.schedules()
    overrides = catalog.overrides(since=now)
    rows = []
    for v in versions:
        assert v.definition is not None
        people = oncall.on_call(v.definition.plan(), overrides_of(overrides, v.name), now)
        rows.append((v, people))
    if as_json:
        print_json([
            {"name": v.name, "version": v.version, "description": v.definition.description, "timezone": v.definition.timezone,
             "rotations": len(v.definition.rotations), "on_call": [p.contact for p in people],
             "updated_at": v.created_at, "updated_by": v.actor}
            for v, people in rows if v.definition
        ])
        return
    table = Table("schedule", "version", "time zone", "rotations", "on call now", "description")
    for v, people in rows:
        d = v.definition
        assert d is not None
        table.add_row(v.name, str(v.version), d.timezone, str(len(d.rotations)), _who(people), d.description)
    console().print(table if versions else "no schedules yet: add `schedule:` files to ladders/ and `escalator apply ladders/`")


@app.command()
def show(
    ctx: typer.Context,
    name: NameArg,
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="How far ahead to list the turns.")] = 14,
    version: Annotated[int | None, typer.Option("--version", help="Show this version instead of the current one.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A schedule: its rotations, the coming turns with their hand-over times, overrides and gaps."""
    catalog = state(ctx).catalog
    v = catalog.schedule(name, version)
    d = v.definition
    if d is None:
        typer.echo(f"{name} v{v.version}: deleted {_stamp(v.created_at, 'UTC')} by {v.actor}")
        return
    now = clock.now()
    overrides = catalog.overrides([name], since=now)
    plan, mine = d.plan(), overrides_of(overrides, name)
    end = now + timedelta(days=days)
    turns = oncall.turns(plan, mine, now, end)
    gaps = oncall.gaps(plan, mine, now, end)
    if as_json:
        print_json({
            "name": v.name, "version": v.version, "definition": d.to_document(),
            "turns": [{"from": a, "until": b, "on_call": [_on_call_json(p) for p in who]} for a, b, who in turns],
            "overrides": [_override_json(o) for o in overrides],
            "gaps": [{"from": a, "until": b} for a, b in gaps],
        })
    else:
        out = console()
        out.print(styled((d.name, "bold"), f" v{v.version}" + (f" — {d.description}" if d.description else "")))
        out.print(f"time zone {d.timezone} · hand-over notices {'on' if d.notify_handoff else 'off'} · changed by {v.actor}")
        rotations = Table("rotation", "contacts", "shift", "start", "active")
        for r in d.rotations:
            active = "; ".join(f"{','.join(w.days)} {w.start}–{w.end}" for w in r.active) or "always"
            rotations.add_row(r.name, ", ".join(r.contacts), r.shift, r.start, active)
        out.print(rotations)
        table = Table("from", "until", "on call", title=f"the next {days} days ({d.timezone})")
        for a, b, who in turns:
            table.add_row(_stamp(a, d.timezone), _stamp(b, d.timezone), _who(who))
        out.print(table)
        if overrides:
            out.print(_overrides_table(overrides, {name: d.timezone}))
    warn_gaps([d], overrides, now)


def _on_call_json(p: oncall.OnCall) -> dict[str, Any]:
    return {"contact": p.contact, "rotation": p.rotation, "override": int(p.override) if p.override else None, "until": p.until}


@app.command()
def who(ctx: typer.Context, name: NameArg, at: AtOpt = "now", as_json: JsonOpt = False) -> None:
    """Who is on call at a moment (default: now)."""
    catalog = state(ctx).catalog
    v = catalog.schedule(name)
    assert v.definition is not None
    moment = parse_when(at, v.definition.timezone, clock.now())
    people = oncall.on_call(v.definition.plan(), overrides_of(catalog.overrides([name], since=moment), name), moment)
    if as_json:
        print_json({"schedule": name, "at": moment, "on_call": [_on_call_json(p) for p in people]})
        return
    zone = v.definition.timezone
    if not people:
        typer.echo(f"{name}: nobody is on call at {_stamp(moment, zone)}")
        return
    table = Table("contact", "why", "until", title=f"{name} at {_stamp(moment, zone)}")
    for p in people:
        table.add_row(p.contact, f"override {p.override}" if p.override else f"rotation {p.rotation}", _stamp(p.until, zone))
    console().print(table)


@app.command()
def export(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Schedules to export (default: all).", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print schedules as YAML that `escalator apply` takes back unchanged."""
    catalog = state(ctx).catalog
    docs = [catalog.schedule(n).definition for n in names] if names else [v.definition for v in catalog.schedules()]
    write_out(ladder_files.dump(schedules=[d for d in docs if d is not None]), output)


@app.command()
def history(ctx: typer.Context, name: NameArg, as_json: JsonOpt = False) -> None:
    """Every version of a schedule: when, who, what changed and why."""
    versions = state(ctx).catalog.schedule_history(name)
    if as_json:
        print_json([_version_json(v, definition=False) for v in versions])
        return
    console().print(history_table(versions, _stamp))


def _version_json(v: ScheduleVersion, definition: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"name": v.name, "version": v.version, "updated_at": v.created_at, "updated_by": v.actor,
                           "change": v.change, "comment": v.comment, "deleted": v.deleted}
    if definition:
        out["definition"] = v.definition.to_document() if v.definition else None
    return out


@app.command()
def validate(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders of .yaml files.", show_default=False)],
    offline: Annotated[bool, typer.Option("--offline", help="Resolve names only among the files given.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check files as `apply` would, without writing anything (the same as `escalator ladder validate`)."""
    from escalator.cli.ladder import validate as validate_files

    validate_files(ctx, paths, offline, as_json)


@app.command()
def rollback(
    ctx: typer.Context,
    name: NameArg,
    to: Annotated[int | None, typer.Option("--to", help="Version to return to (default: the one before the latest).")] = None,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an earlier version current again, as a new version."""
    version = state(ctx).catalog.rollback_schedule(name, to, actor_of(ctx, actor), clock.now(), comment)
    if as_json:
        print_json(_version_json(version) if version else {"name": name, "changed": False})
    else:
        typer.echo(f"{name}: no change" if version is None else f"{name} v{version.version}: {version.change}")


@app.command()
def delete(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a schedule (refused while a ladder names it; its history stays, `rollback` restores it)."""
    catalog = state(ctx).catalog
    catalog.schedule(name)
    if not yes:
        typer.confirm(f"Delete schedule {name!r}?", abort=True)
    version = catalog.delete_schedule(name, actor_of(ctx, actor), clock.now(), comment)
    if as_json:
        print_json(_version_json(version))
    else:
        typer.echo(f"{name} v{version.version}: {version.change}")


# -- cover: overrides ----------------------------------------------------------------------------------


class _CoverGroup(TyperGroup):
    """`escalator cover SCHEDULE …` makes an override; `cover list` and `cover remove` are verbs.
    (A schedule named `list` or `remove` is covered with `escalator cover make list …`.)"""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["make", *args]
        return super().parse_args(ctx, args)


cover_app = typer.Typer(
    cls=_CoverGroup,
    help="Overrides: `escalator cover SCHEDULE --by ID …` puts someone on call; `cover list`, `cover remove ID`.",
    no_args_is_help=True,
)


def _override_json(o: Override) -> dict[str, Any]:
    return {"id": o.id, "schedule": o.schedule, "by": o.by, "instead_of": o.instead_of, "add": o.add, "from": o.start,
            "until": o.until, "comment": o.comment, "created_at": o.created_at, "created_by": o.created_by,
            "removed_at": o.removed_at, "removed_by": o.removed_by}


def _overrides_table(overrides: list[Override], zones: dict[str, str]) -> Table:
    table = Table("id", "schedule", "who", "how", "from", "until", "made by", "comment", title="overrides")
    for o in overrides:
        zone = zones.get(o.schedule, "UTC")
        how = f"instead of {o.instead_of}" if o.instead_of else "added" if o.add else "replaces everyone"
        if o.removed_at:
            how += f" (removed by {o.removed_by})"
        table.add_row(str(o.id), o.schedule, o.by, how, _stamp(o.start, zone), _stamp(o.until, zone), o.created_by, o.comment or "")
    return table


@cover_app.command("make", hidden=True)
def make(
    ctx: typer.Context,
    schedule: NameArg,
    by: Annotated[str, typer.Option("--by", help="Who goes on call.", show_default=False)],
    instead_of: Annotated[str | None, typer.Option("--instead-of", help="Replace only this person (while they are on call).")] = None,
    add: Annotated[bool, typer.Option("--add", help="Join whoever is on call instead of replacing them.")] = False,
    start: Annotated[str, typer.Option("--from", help="When it starts: now, HH:MM or a date-time.")] = "now",
    until: Annotated[str | None, typer.Option("--until", help="When it ends: HH:MM or a date-time.")] = None,
    span: Annotated[str | None, typer.Option("--for", help="How long, like 12h or 2d (instead of --until).")] = None,
    comment: CommentOpt = None,
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put someone on call for a while: instead of everyone, instead of one person, or beside them."""
    catalog = state(ctx).catalog
    schedule = validate_value(Identifier, schedule, "schedule")
    by = validate_value(Identifier, by, "--by")
    if (until is None) == (span is None):
        raise InvalidInput(Problem("give --until or --for (one of them)", field="--until"))
    zone = catalog.schedule(schedule).definition.timezone  # type: ignore[union-attr]
    now = clock.now()
    begin = parse_when(start, zone, now, "--from")
    end = parse_when(until, zone, begin, "--until") if until is not None else begin + parse_span(span or "")
    made = catalog.add_override(schedule, by, begin, end, actor_of(ctx, actor), now, instead_of, add, comment)
    rotas = catalog.schedule(schedule).definition
    if instead_of is not None and rotas is not None and instead_of not in rotas.contact_ids():
        typer.echo(f"warning: {instead_of} is on no rotation of {schedule}: this override applies only while "
                   "another override puts them on call", err=True)
    if as_json:
        print_json(_override_json(made))
    else:
        typer.echo(made.id)


@cover_app.command("list")
def cover_list(
    ctx: typer.Context,
    schedule: Annotated[str | None, typer.Argument(help="Only this schedule's.", show_default=False)] = None,
    include_past: Annotated[bool, typer.Option("--all", help="Past and removed ones too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Overrides current and coming (with --all: past and removed ones too)."""
    catalog = state(ctx).catalog
    found = catalog.overrides([schedule] if schedule else None, None if include_past else clock.now(), include_past)
    if as_json:
        print_json([_override_json(o) for o in found])
        return
    zones = {v.name: v.definition.timezone for v in catalog.schedules() if v.definition}
    console().print(_overrides_table(found, zones) if found else "no overrides")


@cover_app.command("remove")
def cover_remove(
    ctx: typer.Context,
    override_id: Annotated[int, typer.Argument(metavar="ID", help="The override's id (`cover list`).", show_default=False)],
    actor: ActorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove an override (recorded with who and when)."""
    removed = state(ctx).catalog.remove_override(override_id, actor_of(ctx, actor), clock.now())
    if as_json:
        print_json(_override_json(removed))
    else:
        typer.echo(f"override {removed.id} removed")


# -- oncall ----------------------------------------------------------------------------------------------


def oncall_command(
    ctx: typer.Context,
    ladder: Annotated[str | None, typer.Argument(help="Only this ladder.", show_default=False)] = None,
    at: AtOpt = "now",
    as_json: JsonOpt = False,
) -> None:
    """For each ladder and leg, who would be paged if it started then. A date-time without an offset
    is in the ladder's time zone (all ladders: theirs when they share one, else UTC)."""
    catalog = state(ctx).catalog
    versions = [catalog.ladder(ladder)] if ladder else catalog.ladders()
    ladders = [(v.version, v.definition) for v in versions if v.definition is not None]
    zones = {d.timezone for _, d in ladders}
    zone = zones.pop() if len(zones) == 1 else "UTC"
    moment = parse_when(at, zone, clock.now())
    contacts = catalog.contact_map()
    schedules = {v.name: v.definition for v in catalog.schedules() if v.definition is not None}
    overrides = catalog.overrides(since=moment)
    people = {
        name: [p.contact for p in oncall.on_call(d.plan(), overrides_of(overrides, name), moment)] for name, d in schedules.items()
    }
    on_call = {
        name: tuple(walk.Reach(c, bool(contacts[c].phone), bool(contacts[c].push_tokens)) for c in ids if c in contacts)
        for name, ids in people.items()
    }
    result = []
    for version, d in ladders:
        plan = build_plan(d, version, contacts)
        legs = [{"leg": leg.name, "contacts": list(dict.fromkeys(c for c, _ in leg.resolve(on_call)))} for leg in plan.legs]
        result.append({"ladder": d.name, "legs": legs, "schedules": [list(leg.schedules) for leg in plan.legs]})
    if as_json:
        print_json({"at": moment, "ladders": [{"ladder": r["ladder"], "legs": r["legs"]} for r in result]})
        return
    table = Table("ladder", "leg", "schedule", "would page", title=f"on call at {_stamp(moment, zone)}")
    for r in result:
        for leg, names in zip(r["legs"], r["schedules"]):
            who_ = ", ".join(f"{contacts[c].name} ({c})" if c in contacts else c for c in leg["contacts"]) or "nobody: the leg passes at once"
            table.add_row(r["ladder"], leg["leg"], ", ".join(names), who_)
    console().print(table if ladders else "no ladders yet: `escalator apply ladders/`")
