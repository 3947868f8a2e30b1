"""Warnings that `apply`, `ladder validate` and `schedule show` print on stderr without refusing
anything: coverage gaps in the coming weeks (SPEC §10), and legs that text a number that opted out
of SMS (SPEC §11). The exit status stays what it is."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import typer

from escalator import oncall
from escalator.ladders import Contact, Ladder, opted_out_warnings
from escalator.schedules import ScheduleDoc, gap_warnings
from escalator.store import opt_outs
from escalator.store.catalog import Catalog, Override

GAP_DAYS = 28


def overrides_of(overrides: Iterable[Override], schedule: str) -> tuple[oncall.Override, ...]:
    return tuple(
        oncall.Override(str(o.id), o.by, o.start, o.until, o.instead_of, o.add) for o in overrides if o.schedule == schedule
    )


def warn_gaps(schedules: Iterable[ScheduleDoc], overrides: Iterable[Override], now: datetime) -> None:
    """Every gap in the next 28 days, on stderr."""
    overrides = list(overrides)
    for schedule in schedules:
        for line in gap_warnings(schedule.plan(), overrides_of(overrides, schedule.name), now, GAP_DAYS):
            typer.echo(line, err=True)


def warn_opted_out(catalog: Catalog, ladders: list[Ladder], contacts: dict[str, Contact] | None = None,
                   schedules: dict[str, ScheduleDoc] | None = None) -> None:
    """Legs relying on the SMS of a number that texted STOP, on stderr (SPEC §11). `contacts` and
    `schedules`: those declared in the files, over what the database holds."""
    opted = opt_outs.opted_out(catalog.engine)
    if not opted or not ladders:
        return
    people = catalog.contact_map() | (contacts or {})
    known = {v.name: v.definition for v in catalog.schedules() if v.definition} | (schedules or {})
    for ladder in ladders:
        for line in opted_out_warnings(ladder, people, {n: s.contact_ids() for n, s in known.items()}, opted):
            typer.echo(line, err=True)

