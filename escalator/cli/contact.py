"""`escalator contact …`: the people on the ladders."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from escalator import clock
from escalator.cli.common import ActorOpt, CommentOpt, JsonOpt, actor_of, console, print_json, state, when
from escalator.errors import InvalidInput, Problem
from escalator.ladders import Contact, Identifier, build_contact, validate_value
from escalator.store import opt_outs

app = typer.Typer(help="Manage contacts (the people ladders page).", no_args_is_help=True)

IdArg = Annotated[str, typer.Argument(help="The contact's id, e.g. alice.", show_default=False)]
PhoneOpt = Annotated[str | None, typer.Option("--phone", help='E.164 number, e.g. "+14155550101".')]
TokensOpt = Annotated[list[str] | None, typer.Option("--push-token", help="FCM registration token (repeatable).")]


def _build(doc: dict[str, object]) -> Contact:
    try:
        return build_contact(doc)
    except InvalidInput as exc:
        options = {"name": "--name", "phone": "--phone", "push_tokens": "--push-token"}
        problems = [Problem(p.message, field=options.get((p.field or "").split("[")[0], p.field)) for p in exc.problems]
        raise InvalidInput(problems) from None


@app.command()
def add(
    ctx: typer.Context,
    contact_id: IdArg,
    name: Annotated[str, typer.Option("--name", help="Full name, as shown to people.")],
    phone: PhoneOpt = None,
    push_token: TokensOpt = None,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
) -> None:
    """Add a contact."""
    contact_id = validate_value(Identifier, contact_id, "id")
    contact = _build({"id": contact_id, "name": name, "phone": phone, "push_tokens": push_token or []})
    version = state(ctx).catalog.add_contact(contact, actor_of(ctx, actor), clock.now(), comment)
    typer.echo(f"contact {contact_id}: created (v{version})")


@app.command()
def edit(
    ctx: typer.Context,
    contact_id: IdArg,
    name: Annotated[str | None, typer.Option("--name")] = None,
    phone: PhoneOpt = None,
    no_phone: Annotated[bool, typer.Option("--no-phone", help="Remove the phone number.")] = False,
    push_token: Annotated[
        list[str] | None, typer.Option("--push-token", help="Replace all push tokens with these (repeatable).")
    ] = None,
    add_push_token: Annotated[list[str] | None, typer.Option("--add-push-token", help="Add a push token.")] = None,
    remove_push_token: Annotated[list[str] | None, typer.Option("--remove-push-token", help="Remove a push token.")] = None,
    actor: ActorOpt = None,
    comment: CommentOpt = None,
) -> None:
    """Change a contact. Ladders that name the contact are re-checked (e.g. a phone is still needed)."""
    if phone is not None and no_phone:
        raise InvalidInput(Problem("give --phone or --no-phone, not both", field="--no-phone"))

    def change(current: Contact) -> Contact:
        doc = current.to_document()
        if name is not None:
            doc["name"] = name
        if phone is not None:
            doc["phone"] = phone
        if no_phone:
            doc.pop("phone", None)
        tokens = list(current.push_tokens) if push_token is None else list(push_token)
        for token in add_push_token or []:
            if token not in tokens:
                tokens.append(token)
        for token in remove_push_token or []:
            if token not in tokens:
                raise InvalidInput(Problem(f"contact {current.id!r} has no such push token", field="--remove-push-token"))
            tokens.remove(token)
        doc["push_tokens"] = tokens
        return _build(doc)

    contact_id = validate_value(Identifier, contact_id, "id")
    _, version = state(ctx).catalog.edit_contact(contact_id, change, actor_of(ctx, actor), clock.now(), comment)
    typer.echo(f"contact {contact_id}: " + ("no change" if version is None else f"updated (v{version})"))


@app.command()
def remove(ctx: typer.Context, contact_id: IdArg, actor: ActorOpt = None, comment: CommentOpt = None) -> None:
    """Remove a contact (refused while a ladder names them)."""
    version = state(ctx).catalog.remove_contact(contact_id, actor_of(ctx, actor), clock.now(), comment)
    typer.echo(f"contact {contact_id}: removed (v{version})")


@app.command("list")
def list_(
    ctx: typer.Context,
    include_removed: Annotated[bool, typer.Option("--all", help="Include removed contacts.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List contacts."""
    catalog = state(ctx).catalog
    records = catalog.contacts(include_removed=include_removed)
    opted = opt_outs.opted_out(catalog.engine)  # numbers that texted STOP (SPEC §11)

    def opted_out(phone: str | None) -> dict[str, object] | None:
        row = opted.get(phone or "")
        return {"at": row.at, "source": row.source} if row else None

    if as_json:
        print_json(
            [
                r.contact.to_document()
                | {"push_tokens": list(r.contact.push_tokens), "phone": r.contact.phone}
                | {"version": r.version, "updated_at": r.updated_at, "updated_by": r.updated_by, "removed": r.removed}
                | {"sms_opted_out": opted_out(r.contact.phone)}
                for r in records
            ]
        )
        return
    table = Table("id", "name", "phone", "sms", "push tokens", "version", "changed", "by")
    for r in records:
        c = r.contact
        out = opted.get(c.phone or "")
        sms = "—" if not c.phone else f"opted out (STOP) {when(out.at)}" if out else "ok"
        table.add_row(
            c.id + (" (removed)" if r.removed else ""), c.name, c.phone or "—", sms, str(len(c.push_tokens)),
            str(r.version), when(r.updated_at), r.updated_by,
        )
    console().print(table if records else "no contacts yet: `escalator apply ladders/`")


@app.command("test")
def test_page(
    ctx: typer.Context,
    contact_id: IdArg,
    channel: Annotated[
        list[str] | None, typer.Option("--channel", help="voice, sms or push (repeatable; default: every one the contact has).")
    ] = None,
    wait: Annotated[float, typer.Option("--wait", min=1, max=600, help="Seconds to wait for a final delivery status.")] = 60,
) -> None:
    """Send a test page and report its delivery status: check a phone before the night shift."""
    import asyncio

    st = state(ctx)
    contact = st.catalog.contact_map().get(validate_value(Identifier, contact_id, "id"))
    if contact is None:
        raise InvalidInput(Problem(f"no contact named {contact_id!r}", field="contact"))
    reachable = [c for c in ("voice", "sms") if contact.phone] + (["push"] if contact.push_tokens else [])
    wanted = channel or reachable
    for name in wanted:
        if name not in ("voice", "sms", "push"):
            raise InvalidInput(Problem(f"{name!r} is not one of voice, sms, push", field="--channel"))
        if name not in reachable:
            what = "push tokens" if name == "push" else "phone"
            raise InvalidInput(Problem(f"contact {contact.id!r} has no {what} for {name}", field="--channel"))
    results = asyncio.run(_send_tests(st.settings, contact, wanted, wait))
    for name, status, _, detail in results:
        typer.echo(f"{name}: {status}" + (f" ({detail})" if detail else ""))
    if not all(ok for _, _, ok, _ in results):
        raise typer.Exit(1)


async def _send_tests(settings, contact: Contact, names: list[str], wait: float) -> list[tuple[str, str, bool, str]]:  # noqa: ANN001
    import asyncio
    import time
    import uuid

    from escalator.ack_tokens import AckTokens, signing_key
    from escalator.channels import Delivery, Page
    from escalator.daemon import build_channels
    from escalator.metrics import Metrics

    channels = build_channels(settings, Metrics(), AckTokens(signing_key(settings.push_signing_key, settings.data_dir)))
    results = []
    try:
        for name in names:
            page = Page(f"test-{uuid.uuid4().hex[:10]}", "test", name, contact, "Test page from escalator", 0, "test", wait, test=True)
            outcome = await channels[name].send(page)
            if not outcome.ok:
                results.append((name, "failed", False, outcome.reason or ""))
                continue
            delivery, deadline = Delivery("sent", final=False, ok=True), time.monotonic() + wait
            while time.monotonic() < deadline:
                delivery = await channels[name].delivery_status(outcome.ref or "")
                if delivery.final:
                    break
                await asyncio.sleep(1)
            results.append((name, delivery.status, delivery.ok, outcome.ref or ""))
    finally:
        for ch in channels.values():
            await ch.close()
    return results
