"""The `escalator` command (SPEC §7). Exit status: 0 success, 1 failure, 2 bad usage or invalid input."""

from __future__ import annotations

import typer

from escalator.cli import contact, db, heartbeat, incident, ladder, report, schedule, watch
from escalator.cli.common import CliState, EscalatorGroup

app = typer.Typer(
    cls=EscalatorGroup,
    help="escalator: after-hours escalation paging. Walks an on-call ladder until somebody owns the incident.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(ctx: typer.Context) -> None:
    state = ctx.ensure_object(CliState)
    ctx.call_on_close(state.close)


app.command("run")(incident.run)
app.command("apply")(ladder.apply)
app.command("publish")(incident.publish)
app.command("report")(report.report)
app.command("watch")(watch.watch)
app.add_typer(ladder.app, name="ladder")
app.add_typer(schedule.app, name="schedule")
app.add_typer(schedule.cover_app, name="cover")
app.command("oncall")(schedule.oncall_command)
app.add_typer(contact.app, name="contact")
app.add_typer(incident.app, name="incident")
app.add_typer(heartbeat.app, name="heartbeat")
app.add_typer(db.app, name="db")


def main() -> None:
    app()
