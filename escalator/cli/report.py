"""`escalator report` (SPEC §12): how the incidents of a period went — who answered, how fast, who never picks up."""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Annotated, Any

import typer
from rich.table import Table

from escalator import clock
from escalator.cli.common import console, print_json, state, styled, when
from escalator.errors import InvalidInput, Problem
from escalator.ladders import Identifier, validate_value
from escalator.schedules import parse_span
from escalator.store import reports
from escalator.store.reports import Report, Spread

SinceOpt = Annotated[str, typer.Option("--since", help="How far back: 7d, 24h, 90m, 2w (incidents opened since then).")]


def report(
    ctx: typer.Context,
    since: SinceOpt = "7d",
    ladder: Annotated[str | None, typer.Option("--ladder", help="Only this ladder's incidents.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="The report as CSV: section, group, metric, value.")] = False,
) -> None:
    """Incidents opened in a period: acknowledged (by channel), resolved, exhausted, re-opened; time to
    acknowledge overall, per ladder, per contact; pages by channel and outcome; unreachable legs;
    contacts paged most without acknowledging; the top failure reasons."""
    if as_json and as_csv:
        raise InvalidInput(Problem("choose one of --json and --csv", field="--csv"))
    if ladder is not None:
        ladder = validate_value(Identifier, ladder, "--ladder")
    until = clock.now()
    built = reports.build(state(ctx).schema_checked, until - parse_span(since, "--since"), until, ladder)
    if as_json:
        print_json(as_dict(built))
    elif as_csv:
        typer.echo(as_rows(built), nl=False)
    else:
        show(built)


def as_dict(r: Report) -> dict[str, Any]:
    spread = lambda s: dataclasses.asdict(s) if s else None  # noqa: E731
    return {
        "since": r.since, "until": r.until, "ladder": r.ladder,
        "incidents": r.incidents,
        "acknowledged_by_channel": r.acknowledged_by_channel,
        "time_to_acknowledge": {
            "overall": spread(r.tta_overall),
            "by_ladder": {k: spread(v) for k, v in sorted(r.tta_by_ladder.items())},
            "by_contact": {k: spread(v) for k, v in sorted(r.tta_by_contact.items())},
        },
        "pages": r.pages, "unreachable_legs": r.unreachable_legs, "unanswered": r.unanswered,
        "failure_reasons": r.failure_reasons,
    }


def as_rows(r: Report) -> str:
    """Long form, one number a row, columns in a fixed order: section, group, metric, value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "group", "metric", "value"])
    for metric, value in r.incidents.items():
        writer.writerow(["incidents", "", metric, value])
    for channel, n in sorted(r.acknowledged_by_channel.items()):
        writer.writerow(["acknowledged_by_channel", channel, "count", n])
    spreads = [("", r.tta_overall)] if r.tta_overall else []
    for section, items in (("time_to_acknowledge", spreads), ("time_to_acknowledge.by_ladder", sorted(r.tta_by_ladder.items())),
                           ("time_to_acknowledge.by_contact", sorted(r.tta_by_contact.items()))):
        for group, s in items:
            for metric in ("n", "p50_s", "p90_s", "max_s"):
                writer.writerow([section, group, metric, getattr(s, metric)])
    for p in r.pages:
        writer.writerow(["pages", p["channel"], p["outcome"], p["count"]])
    for leg in r.unreachable_legs:
        writer.writerow(["unreachable_legs", f"{leg['ladder']}/{leg['leg']}", leg["reason"], leg["count"]])
    for u in r.unanswered:
        writer.writerow(["unanswered", u["contact"], "paged", u["paged"]])
        writer.writerow(["unanswered", u["contact"], "acknowledged", u["acknowledged"]])
    for f in r.failure_reasons:
        writer.writerow(["failure_reasons", f["reason"] or "", "count", f["count"]])
    return out.getvalue()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def show(r: Report) -> None:
    out = console()
    scope = f" · ladder {r.ladder}" if r.ladder else ""
    out.print(styled(("report", "bold"), f" {when(r.since)} → {when(r.until)}{scope}"))
    i = r.incidents
    by = ", ".join(f"{n} by {ch}" for ch, n in sorted(r.acknowledged_by_channel.items())) or "none"
    out.print(f"{i['opened']} opened · {i['acknowledged']} acknowledged ({by}) · {i['resolved']} resolved · "
              f"{i['exhausted']} exhausted · {i['reopened']} re-opened by an expired acknowledgement")
    table = Table("time to acknowledge", "incidents", "p50", "p90", "max")
    rows: list[tuple[str, Spread]] = [("overall", r.tta_overall)] if r.tta_overall else []
    rows += [(f"ladder {k}", v) for k, v in sorted(r.tta_by_ladder.items())]
    rows += [(f"contact {k}", v) for k, v in sorted(r.tta_by_contact.items())]
    for name, s in rows:
        table.add_row(name, str(s.n), _duration(s.p50_s), _duration(s.p90_s), _duration(s.max_s))
    out.print(table if rows else "nothing acknowledged in the period")
    if r.pages:
        pages = Table("channel", "outcome", "pages")
        for p in r.pages:
            pages.add_row(p["channel"], p["outcome"], str(p["count"]))
        out.print(pages)
    if r.unreachable_legs:
        legs = Table("ladder", "leg", "nobody reached", "times")
        for leg in r.unreachable_legs:
            legs.add_row(leg["ladder"], leg["leg"] or "", leg["reason"], str(leg["count"]))
        out.print(legs)
    if r.unanswered:
        people = Table("contact", "incidents paged", "acknowledged", "never answered")
        for u in r.unanswered:
            people.add_row(u["contact"], str(u["paged"]), str(u["acknowledged"]), str(u["paged"] - u["acknowledged"]))
        out.print(people)
    if r.failure_reasons:
        reasons = Table("failure reason", "pages")
        for f in r.failure_reasons:
            reasons.add_row(f["reason"] or "", str(f["count"]))
        out.print(reasons)
