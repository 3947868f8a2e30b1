"""`escalator apply` and `escalator ladder …`: declare, inspect and edit ladders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from escalator import clock, ladder_files
from escalator.cli.common import (
    ActorOpt,
    CommentOpt,
    JsonOpt,
    actor_of,
    console,
    history_table,
    print_json,
    split_list,
    state,
    styled,
    when,
    write_out,
)
from escalator.errors import InvalidInput, Problem
from escalator.ladders import (
    AckExpiry,
    Channel,
    Duration,
    Identifier,
    Ladder,
    add_leg as add_leg_to,
    format_duration,
    move_leg as move_leg_in,
    remove_leg as remove_leg_from,
    set_fields,
    set_leg as set_leg_of,
    swap_contacts,
    validate_value,
)
from escalator.store.catalog import LadderVersion
from escalator.cli.checks import warn_gaps, warn_opted_out

app = typer.Typer(help="Inspect and edit ladders.", no_args_is_help=True)

PathsArg = Annotated[list[Path], typer.Argument(help="Files or folders of .yaml files.", show_default=False)]
NameArg = Annotated[str, typer.Argument(help="The ladder's name.", show_default=False)]
LegArg = Annotated[str, typer.Argument(help="The leg's name.", show_default=False)]


# -- apply and validate ---------------------------------------------------------------------------


def apply(
    ctx: typer.Context,
    paths: PathsArg,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply contact, schedule and ladder files: everything is checked first, then all is written or nothing."""
    st = state(ctx)
    now = clock.now()
    try:
        declared = ladder_files.load(paths)
        report = st.catalog.apply(declared, actor_of(ctx, actor), now, comment)
    except InvalidInput as exc:
        if as_json:
            print_json({"applied": False, "problems": [p.as_dict() for p in exc.problems]})
        raise
    if as_json:
        print_json({"applied": True, "contacts": report.contacts, "schedules": report.schedules, "ladders": report.ladders})
    else:
        for item in report.contacts:
            typer.echo(f"contact {item['id']}: {item['outcome']} (v{item['version']})")
        for item in report.schedules:
            typer.echo(f"schedule {item['name']}: {item['outcome']} (v{item['version']})")
        for item in report.ladders:
            typer.echo(f"ladder {item['name']}: {item['outcome']} (v{item['version']})")
    schedules = [s for s, _ in declared.schedules]
    if schedules:
        warn_gaps(schedules, st.catalog.overrides([s.name for s in schedules], since=now), now)
    warn_opted_out(st.catalog, [lad for lad, _ in declared.ladders])


@app.command()
def validate(
    ctx: typer.Context,
    paths: PathsArg,
    offline: Annotated[
        bool, typer.Option("--offline", help="Resolve contacts only among the files given; do not open the database.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check files as `apply` would, without writing anything."""
    now = clock.now()
    try:
        declared = ladder_files.load(paths)
        catalog = None if offline else state(ctx).catalog
        known = catalog.contact_map() if catalog else {}
        known_schedules = {v.name: v.definition for v in catalog.schedules() if v.definition} if catalog else {}
        problems = ladder_files.check_references(declared, known, known_schedules)
        if problems:
            raise InvalidInput(problems)
    except InvalidInput as exc:
        if as_json:
            print_json({"valid": False, "problems": [p.as_dict() for p in exc.problems]})
        raise
    summary = {
        "valid": True,
        "contacts": [c.id for c, _ in declared.contacts],
        "schedules": [s.name for s, _ in declared.schedules],
        "ladders": [lad.name for lad, _ in declared.ladders],
    }
    if as_json:
        print_json(summary)
    else:
        typer.echo(
            f"valid: {len(summary['contacts'])} contacts, {len(summary['schedules'])} schedules, {len(summary['ladders'])} ladders"
        )
    schedules = [s for s, _ in declared.schedules]
    if schedules:
        warn_gaps(schedules, catalog.overrides([s.name for s in schedules], since=now) if catalog else [], now)
    if catalog is not None:
        warn_opted_out(catalog, [lad for lad, _ in declared.ladders], {c.id: c for c, _ in declared.contacts},
                       {s.name: s for s in schedules})


# -- reading --------------------------------------------------------------------------------------


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List ladders with their current version."""
    versions = state(ctx).catalog.ladders()
    if as_json:
        print_json(
            [
                {
                    "name": v.name,
                    "version": v.version,
                    "description": v.definition.description,
                    "legs": len(v.definition.legs),
                    "updated_at": v.created_at,
                    "updated_by": v.actor,
                }
                for v in versions
                if v.definition
            ]
        )
        return
    table = Table("ladder", "version", "legs", "window", "cycles", "description", "changed", "by")
    for v in versions:
        d = v.definition
        assert d is not None
        table.add_row(
            v.name, str(v.version), str(len(d.legs)), format_duration(d.ack_timeout), _cycles(d), d.description,
            when(v.created_at, d.timezone), v.actor,
        )
    console().print(table if versions else "no ladders yet: `escalator apply ladders/`")


def _cycles(ladder: Ladder) -> str:
    return "until acknowledged" if ladder.cycles == 0 else str(ladder.cycles)


def _version_json(v: LadderVersion) -> dict[str, object]:
    return {
        "name": v.name,
        "version": v.version,
        "updated_at": v.created_at,
        "updated_by": v.actor,
        "change": v.change,
        "comment": v.comment,
        "definition": v.definition.to_document() if v.definition else None,
    }


@app.command()
def show(
    ctx: typer.Context,
    name: NameArg,
    version: Annotated[int | None, typer.Option("--version", help="Show this version instead of the current one.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a ladder: its legs, who is on each, how they are paged and for how long."""
    catalog = state(ctx).catalog
    v = catalog.ladder(name, version)
    if as_json:
        print_json(_version_json(v))
        return
    d = v.definition
    if d is None:
        typer.echo(f"{name} v{v.version}: deleted {when(v.created_at)} by {v.actor}")
        return
    people = {r.contact.id: r.contact for r in catalog.contacts(include_removed=True)}
    out = console()
    out.print(styled((d.name, "bold"), f" v{v.version}" + (f" — {d.description}" if d.description else "")))
    out.print(
        f"time zone {d.timezone} · window {format_duration(d.ack_timeout)} per leg · cycles {_cycles(d)} · "
        f"acknowledgements {'expire after ' + format_duration(d.ack_expires) if d.ack_expires else 'do not expire'} · "
        f"{'offers' if d.connect_caller else 'does not offer'} the caller · "
        f"changed {when(v.created_at, d.timezone)} by {v.actor}"
    )
    table = Table("#", "leg", "contacts", "channels", "window")
    for i, leg in enumerate(d.legs):
        names = ", ".join(
            [f"on call: {s}" for s in leg.schedules] + [f"{people[c].name} ({c})" if c in people else c for c in leg.contacts]
        )
        window = format_duration(d.window(i)) + ("" if leg.ack_timeout is not None else " (default)")
        table.add_row(str(i + 1), leg.name, names, ", ".join(leg.channels), window)
    out.print(table)


@app.command()
def export(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Ladders to export (default: all).", show_default=False)] = None,
    with_contacts: Annotated[
        bool, typer.Option("--with-contacts", help="Also export the contacts these ladders name.")
    ] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print ladders as YAML that `escalator apply` takes back unchanged."""
    catalog = state(ctx).catalog
    if names:
        ladders = [catalog.ladder(n).definition for n in names]
    else:
        ladders = [v.definition for v in catalog.ladders()]
    ladders = [lad for lad in ladders if lad is not None]
    contacts = []
    if with_contacts:
        wanted = set().union(*(lad.contact_ids() for lad in ladders)) if ladders else set()
        contacts = [r.contact for r in catalog.contacts() if r.contact.id in wanted]
    write_out(ladder_files.dump(contacts, ladders), output)


@app.command()
def history(ctx: typer.Context, name: NameArg, as_json: JsonOpt = False) -> None:
    """Every version of a ladder: when, who, what changed and why."""
    versions = state(ctx).catalog.history(name)
    if as_json:
        print_json([{k: v for k, v in _version_json(ver).items() if k != "definition"} | {"deleted": ver.deleted} for ver in versions])
        return
    console().print(history_table(versions))


# -- editing --------------------------------------------------------------------------------------


def _report(version: LadderVersion | None, name: str, as_json: bool) -> None:
    if as_json:
        print_json(_version_json(version) if version else {"name": name, "changed": False})
    elif version is None:
        typer.echo(f"{name}: no change")
    else:
        typer.echo(f"{name} v{version.version}: {version.change}")


def _edit(
    ctx: typer.Context, name: str, edit: Callable[[Ladder], Ladder], actor: str | None, comment: str | None, as_json: bool
) -> None:
    name = validate_value(Identifier, name, "ladder")
    version = state(ctx).catalog.edit_ladder(name, edit, actor_of(ctx, actor), clock.now(), comment)
    _report(version, name, as_json)


ContactsOpt = Annotated[
    str | None, typer.Option("--contacts", help="Comma-separated contact ids, paged together ('none': only the schedule's).")
]
ScheduleOpt = Annotated[
    str | None, typer.Option("--schedule", help="Comma-separated schedules whose on-call people the leg pages ('none': no schedule).")
]
ChannelsOpt = Annotated[str | None, typer.Option("--channels", help="Comma-separated: voice, sms, push.")]
WindowOpt = Annotated[str | None, typer.Option("--ack-timeout", help="Window like 90s or 2m (5s..1h).")]
PositionOpt = Annotated[int | None, typer.Option("--position", help="1-based position in the ladder.")]
BeforeOpt = Annotated[str | None, typer.Option("--before", help="Put it just before this leg.")]
AfterOpt = Annotated[str | None, typer.Option("--after", help="Put it just after this leg.")]


def _contacts(raw: str | None) -> tuple[str, ...] | None:
    if raw is not None and raw.strip().lower() == "none":
        return ()  # a leg on a schedule may have no fixed contacts (the model refuses a leg with neither)
    items = split_list(raw)
    if items is None:
        return None
    if not items:
        raise InvalidInput(Problem("name at least one contact", field="--contacts"))
    return validate_value(tuple[Identifier, ...], items, "--contacts")


def _schedules(raw: str | None) -> tuple[str, ...] | None:
    if raw is not None and raw.strip().lower() == "none":
        return ()
    items = split_list(raw)
    if items is None:
        return None
    if not items:
        raise InvalidInput(Problem("name at least one schedule, or 'none'", field="--schedule"))
    return validate_value(tuple[Identifier, ...], items, "--schedule")


def _channels(raw: str | None) -> tuple[str, ...] | None:
    items = split_list(raw)
    if items is None:
        return None
    if not items:
        raise InvalidInput(Problem("name at least one channel: voice, sms, push", field="--channels"))
    return validate_value(tuple[Channel, ...], items, "--channels")


def _position(ladder: Ladder, position: int | None, before: str | None, after: str | None, moving: str | None) -> int | None:
    """The 0-based target index from --position / --before / --after (at most one of them)."""
    given = [o for o, v in (("--position", position), ("--before", before), ("--after", after)) if v is not None]
    if len(given) > 1:
        raise InvalidInput(Problem("give only one of --position, --before, --after", field=given[1]))
    names = [leg.name for leg in ladder.legs if leg.name != moving]
    if position is not None:
        return position - 1
    anchor, offset = (before, 0) if before is not None else (after, 1) if after is not None else (None, 0)
    if anchor is None:
        return None
    if anchor not in names:
        raise InvalidInput(Problem(f"ladder {ladder.name!r} has no leg {anchor!r}", field=given[0]))
    return names.index(anchor) + offset


@app.command("add-leg")
def add_leg(
    ctx: typer.Context,
    name: NameArg,
    leg: LegArg,
    contacts: ContactsOpt = None,
    schedule: ScheduleOpt = None,
    channels: ChannelsOpt = None,
    ack_timeout: WindowOpt = None,
    position: PositionOpt = None,
    before: BeforeOpt = None,
    after: AfterOpt = None,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a leg (default: at the end)."""
    doc: dict[str, object] = {"name": validate_value(Identifier, leg, "leg")}
    people, schedules = _contacts(contacts), _schedules(schedule)
    if people is None and not schedules:
        raise InvalidInput(Problem("a new leg needs --contacts, --schedule or both", field="--contacts"))
    if people:
        doc["contacts"] = list(people)
    if schedules:
        doc["schedule"] = list(schedules)
    if (ch := _channels(channels)) is not None:
        doc["channels"] = list(ch)
    if ack_timeout is not None:
        doc["ack_timeout"] = validate_value(Duration, ack_timeout, "--ack-timeout")

    def edit(ladder: Ladder) -> Ladder:
        return add_leg_to(ladder, doc, _position(ladder, position, before, after, None))

    _edit(ctx, name, edit, actor, comment, as_json)


@app.command("remove-leg")
def remove_leg(
    ctx: typer.Context, name: NameArg, leg: LegArg, actor: ActorOpt = None, comment: CommentOpt = None, as_json: JsonOpt = False
) -> None:
    """Remove a leg (a ladder keeps at least one)."""
    _edit(ctx, name, lambda ladder: remove_leg_from(ladder, leg), actor, comment, as_json)


@app.command("move-leg")
def move_leg(
    ctx: typer.Context,
    name: NameArg,
    leg: LegArg,
    position: PositionOpt = None,
    before: BeforeOpt = None,
    after: AfterOpt = None,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a leg to another place in the ladder."""

    def edit(ladder: Ladder) -> Ladder:
        ladder.leg_index(leg)
        target = _position(ladder, position, before, after, leg)
        if target is None:
            raise InvalidInput(Problem("say where: --position N, --before LEG or --after LEG", field="--position"))
        return move_leg_in(ladder, leg, target)

    _edit(ctx, name, edit, actor, comment, as_json)


@app.command("set-leg")
def set_leg(
    ctx: typer.Context,
    name: NameArg,
    leg: LegArg,
    contacts: ContactsOpt = None,
    schedule: ScheduleOpt = None,
    channels: ChannelsOpt = None,
    ack_timeout: Annotated[
        str | None, typer.Option("--ack-timeout", help="Window like 90s or 2m, or 'default' for the ladder's.")
    ] = None,
    rename: Annotated[str | None, typer.Option("--rename", help="New name for the leg.")] = None,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a leg's contacts, schedules, channels, window or name."""
    changes: dict[str, object] = {}
    if (people := _contacts(contacts)) is not None:
        changes["contacts"] = people
    if (schedules := _schedules(schedule)) is not None:
        changes["schedule"] = schedules
    if (ch := _channels(channels)) is not None:
        changes["channels"] = ch
    if ack_timeout is not None:
        changes["ack_timeout"] = None if ack_timeout == "default" else validate_value(Duration, ack_timeout, "--ack-timeout")
    if rename is not None:
        changes["name"] = validate_value(Identifier, rename, "--rename")
    if not changes:
        raise InvalidInput(Problem("nothing to change: give --contacts, --schedule, --channels, --ack-timeout or --rename"))

    def edit(ladder: Ladder) -> Ladder:
        if "name" in changes and changes["name"] != leg and any(x.name == changes["name"] for x in ladder.legs):
            raise InvalidInput(Problem(f"ladder {ladder.name!r} already has a leg {changes['name']!r}", field="--rename"))
        return set_leg_of(ladder, leg, **changes)

    _edit(ctx, name, edit, actor, comment, as_json)


@app.command()
def swap(
    ctx: typer.Context,
    name: NameArg,
    leg_a: LegArg,
    leg_b: LegArg,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Exchange the contacts of two legs (the weekly hand-over)."""
    _edit(ctx, name, lambda ladder: swap_contacts(ladder, leg_a, leg_b), actor, comment, as_json)


@app.command("set")
def set_(
    ctx: typer.Context,
    name: NameArg,
    ack_timeout: Annotated[str | None, typer.Option("--ack-timeout", help="Default window per leg, like 120s.")] = None,
    cycles: Annotated[int | None, typer.Option("--cycles", help="Walks of the whole ladder; 0 = until acknowledged.")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="IANA name, e.g. America/Chicago.")] = None,
    ack_expires: Annotated[str | None, typer.Option("--ack-expires", help="Acknowledgements expire after this (5m..24h), or 'off'.")] = None,
    connect_caller: Annotated[bool | None, typer.Option("--connect-caller/--no-connect-caller", help="Offer the acker a call to the caller.")] = None,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change ladder-wide settings."""
    changes: dict[str, object] = {}
    if ack_timeout is not None:
        changes["ack_timeout"] = validate_value(Duration, ack_timeout, "--ack-timeout")
    if ack_expires is not None:
        changes["ack_expires"] = None if ack_expires.strip().lower() == "off" else validate_value(AckExpiry, ack_expires, "--ack-expires")
    for key, value in (("cycles", cycles), ("description", description), ("timezone", timezone), ("connect_caller", connect_caller)):
        if value is not None:
            changes[key] = value
    if not changes:
        raise InvalidInput(Problem(
            "nothing to change: give --ack-timeout, --cycles, --description, --timezone, --ack-expires or --connect-caller"
        ))

    def edit(ladder: Ladder) -> Ladder:
        try:
            return set_fields(ladder, **changes)
        except InvalidInput as exc:  # name the option rather than the document field
            raise InvalidInput([Problem(p.message, field=f"--{p.field}" if p.field in changes else p.field) for p in exc.problems]) from None

    _edit(ctx, name, edit, actor, comment, as_json)


@app.command()
def rollback(
    ctx: typer.Context,
    name: NameArg,
    to: Annotated[int | None, typer.Option("--to", help="Version to return to (default: the one before the latest).")] = None,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an earlier version current again, as a new version (history is never rewritten)."""
    version = state(ctx).catalog.rollback(name, to, actor_of(ctx, actor), clock.now(), comment)
    _report(version, name, as_json)


@app.command()
def delete(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a ladder (its history stays; `rollback` restores it). Incidents in flight are not affected."""
    st = state(ctx)
    st.catalog.ladder(name)
    if not yes:
        typer.confirm(f"Delete ladder {name!r}? New incidents naming it will be rejected or use the default ladder", abort=True)
    protected = [st.settings.default_ladder] if st.settings.default_ladder else []
    version = st.catalog.delete_ladder(name, actor_of(ctx, actor), clock.now(), comment, protected)
    _report(version, name, as_json)
