"""Incidents in the database: every step of a walk is one transaction.

A step locks the incident row, runs the pure walk, and writes in the same transaction the new
state, the timeline events, the outbox rows that will carry those events to NATS, and a record of
every page before any provider is called. So a crash at any moment leaves either the whole step
or none of it, and recovery can tell exactly what was decided and what was sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from escalator import oncall
from escalator import walk as walk_
from escalator.ladders import NAME_RE, Contact, Ladder
from escalator.store.db import read_session, write_session
from escalator.store.group_commit import Rejected, write_one
from escalator.store.rosters import Rosters
from escalator.store.sms_codes import CodeRequest, SmsCodes
from escalator.store.tx import Tx
from escalator.store.tables import (
    ContactRow,
    DeadPushTokenRow,
    IncidentEventRow,
    IncidentNoteRow,
    IncidentRow,
    LadderRow,
    LadderVersionRow,
    OutboxRow,
    PageRow,
    SmsOptOutRow,
)
from escalator.store import opt_outs
from escalator.walk import Emit, Event, Ignored, PageCmd, PageFailed, PageSent, Plan, Recorded, Walk

EVENT_PREFIX = "escalations"
log = logging.getLogger(__name__)

# The step path's statements, built once: building and keying a statement anew cost more than
# running it (cProfile), and a group commit runs thousands a second.
_INCIDENTS, _PAGES, _NOTES = IncidentRow.__table__, PageRow.__table__, IncidentNoteRow.__table__
_READ_INCIDENT = (
    sa.select(
        _INCIDENTS.c.plan, _INCIDENTS.c.state, _INCIDENTS.c.status, _INCIDENTS.c.summary, _INCIDENTS.c.acked_by,
        _INCIDENTS.c.closed_at, _INCIDENTS.c.opened_at, _INCIDENTS.c.caller,
    ).where(_INCIDENTS.c.id == sa.bindparam("id")).with_for_update()
)
_STATUS = sa.select(_INCIDENTS.c.status).where(_INCIDENTS.c.id == sa.bindparam("id"))
_UPDATE_INCIDENT = sa.update(_INCIDENTS).where(_INCIDENTS.c.id == sa.bindparam("_id"))  # SET: the keys given
_NEW_INCIDENT = {
    name: insert(_INCIDENTS).on_conflict_do_nothing(index_elements=["id"]).returning(_INCIDENTS.c.id)
    for name, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
_READ_PAGES = sa.select(_PAGES.c.key, _PAGES.c.status, _PAGES.c.ref, _PAGES.c.reason).where(
    _PAGES.c.incident_id == sa.bindparam("id"), _PAGES.c.key.in_(sa.bindparam("keys", expanding=True))
)
_LADDER_HEAD = sa.select(LadderRow.__table__.c.version, LadderRow.__table__.c.deleted_at).where(
    LadderRow.__table__.c.name == sa.bindparam("name")
)
_CONTACTS_T, _DEAD_T, _OPTED_T = ContactRow.__table__, DeadPushTokenRow.__table__, SmsOptOutRow.__table__
_CONTACTS = (  # with the push tokens FCM reported dead (one row per dead token, NULL for none), and
    # whether the number opted out of SMS (SPEC §11): one statement however many people a step pages
    sa.select(_CONTACTS_T.c.id, _CONTACTS_T.c.name, _CONTACTS_T.c.phone, _CONTACTS_T.c.push_tokens, _DEAD_T.c.token,
              _OPTED_T.c.phone.label("opted_out"))
    .select_from(
        _CONTACTS_T.outerjoin(_DEAD_T, _DEAD_T.c.contact_id == _CONTACTS_T.c.id).outerjoin(_OPTED_T, _OPTED_T.c.phone == _CONTACTS_T.c.phone)
    )
    .where(_CONTACTS_T.c.id.in_(sa.bindparam("ids", expanding=True)))
)
_UPDATE_PAGE = sa.update(_PAGES).where(_PAGES.c.incident_id == sa.bindparam("_id"), _PAGES.c.key == sa.bindparam("_key"))


def _chunks(ids: list[str], size: int = 500) -> Iterable[list[str]]:
    """IN lists of bounded length (the database's parameter limits)."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class NewIncident:
    """A validated `incidents.urgent` message."""

    id: str
    ladder: str
    summary: str
    caller: str | None = None
    severity: str | None = None
    occurred_at: datetime | None = None
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class Standing:
    status: str
    owner: str | None
    driven: bool  # a timer or pages still to drive (walk.driven)
    live: frozenset[str] = frozenset()  # the pages that still matter (the walk's `live`: a reminder's, once taken)


@dataclass
class StepResult:
    """What a step decided, with what the shell needs to carry the commands out."""

    outcome: str  # opened, duplicate, changed, unchanged, unknown
    walk: Walk | None = None
    commands: list[walk_.Command] = field(default_factory=list)
    summary: str = ""
    contacts: dict[str, Contact] = field(default_factory=dict)
    opened_at: datetime | None = None
    codes: dict[str, str] = field(default_factory=dict)  # SMS page key → its reply code
    ignored: Ignored | None = None  # unchanged: why (from the walk)
    caller: str | None = None  # the incident's caller (SPEC §11: in push data, offered to the acker)
    opted_out: frozenset[str] = frozenset()  # contacts among `contacts` whose number opted out of SMS (SPEC §11)


def build_plan(ladder: Ladder, version: int, contacts: dict[str, Contact], window_scale: float = 1.0) -> Plan:
    """A ladder version → the walk's plan: each contact on the channels that can reach it (walk.reachable)."""
    legs = []
    for index, leg in enumerate(ladder.legs):
        targets = []
        for contact_id in leg.contacts:
            contact = contacts.get(contact_id)
            for channel in leg.channels:
                if contact is not None and walk_.reachable(channel, bool(contact.phone), bool(contact.push_tokens)):
                    targets.append((contact_id, channel))
        window = ladder.window(index) * window_scale
        window = int(window) if window == int(window) else window
        legs.append(walk_.LegPlan(leg.name, window, tuple(targets), leg.schedules, leg.channels if leg.schedules else ()))
    expires = ladder.ack_expires * window_scale if ladder.ack_expires is not None else None
    return Plan(ladder.name, version, ladder.cycles, tuple(legs), expires, ladder.connect_caller)


class IncidentStore:
    def __init__(self, engine: Engine, window_scale: float = 1.0, replica: str = "local", codes: SmsCodes | None = None):
        self.engine = engine
        self.codes = codes  # SMS pages get their reply codes in the step that decides them
        self.window_scale = window_scale
        self.replica = replica  # whoever runs a step that arms a window drives it (escalator.store.leases)
        self._ladders: dict[tuple[str, int], Ladder] = {}
        self.rosters = Rosters()

    # -- steps (escalator.store.group_commit has their contract) --------------------------------------

    def open(self, new: NewIncident, default_ladder: str | None, now: datetime) -> StepResult:
        """Open an incident and start its walk; a repeated id changes nothing and is noted."""
        return write_one(self.engine, lambda tx: self.open_in(tx, new, default_ladder, now))

    def open_in(
        self, tx: Tx, new: NewIncident, default_ladder: str | None, now: datetime, claim: Callable[[Tx], bool] | None = None,
    ) -> StepResult:
        """`claim`: checked first, in this transaction; False opens nothing (outcome "unclaimed"): a
        heartbeat's silence already taken by another replica."""
        try:
            ladder_name, fallback = self._resolve_ladder(tx, new.ladder, default_ladder, new.id)
        except Rejected:
            if (status := self._status(tx, new.id)) is None:
                raise
            return self._repeated(tx, new.id, status, now)  # its ladder went away since
        if claim is not None and not claim(tx):  # after the refusals: a step that refuses writes nothing
            return StepResult("unclaimed")
        head = self._head(tx, ladder_name)
        assert head is not None  # _resolve_ladder found it
        ladder = self._ladders.get((ladder_name, head.version))
        if ladder is None:  # versions never change once written: parse each one once
            version_row = tx.session.get(LadderVersionRow, (ladder_name, head.version))
            ladder = self._ladders[(ladder_name, head.version)] = Ladder.model_validate(version_row.snapshot)
        contacts = self._contacts(tx, ladder.contact_ids())
        plan = build_plan(ladder, head.version, contacts, self.window_scale)
        details: dict[str, Any] = {"summary": new.summary, "severity": new.severity}
        if fallback:
            details["requested_ladder"] = new.ladder
            details["reason"] = f"unknown ladder {new.ladder!r}: walking ESCALATOR_DEFAULT_LADDER"
        fresh, opening = walk_.new(new.id, plan), walk_.Open(details)
        walk, commands = walk_.decide(fresh, opening, now, self._on_call(tx, walk_.needs_on_call(fresh, opening), now))
        # One statement tells a new incident from a repeat (the id is the key), and the row exists at
        # once for the rows that refer to it (the ORM would need a flush per incident to order them).
        inserted = tx.execute(
            _NEW_INCIDENT[tx.session.get_bind().dialect.name],
            dict(
                id=new.id, ladder=ladder_name, version=head.version, status=walk.status, deadline=walk.deadline,
                summary=new.summary, caller=new.caller, severity=new.severity, occurred_at=new.occurred_at,
                details=new.details, plan=plan.to_dict(), state=walk.to_dict(), opened_at=now, updated_at=now,
                owner=self.replica, acked_by=None, closed_at=None,
            ),
        ).first()
        if inserted is None:
            return self._repeated(tx, new.id, self._status(tx, new.id), now)
        if plan.schedules:  # and whoever is on call
            contacts = self._contacts(tx, {c.contact for c in commands if isinstance(c, PageCmd)})
        self._record(tx, walk, commands, now)
        codes = self._codes(tx, new.id, commands, contacts, now, fresh=True)
        return StepResult("opened", walk, commands, new.summary, contacts, now, codes, caller=new.caller,
                          opted_out=tx.opted_out & contacts.keys())

    def _repeated(self, tx: Tx, incident_id: str, status: str | None, now: datetime) -> StepResult:
        self._note(tx, incident_id, now, f"repeated urgent message ignored (incident is {status})")
        return StepResult("duplicate", ignored=Ignored(walk_.REPEAT, f"already opened (incident is {status})"))

    @staticmethod
    def _status(tx: Tx, incident_id: str) -> str | None:
        return tx.session.scalar(_STATUS, {"id": incident_id})

    def step(self, incident_id: str, event: Event, now: datetime) -> StepResult:
        """Feed one event to an incident's walk and persist the outcome."""
        return write_one(self.engine, lambda tx: self.step_in(tx, incident_id, event, now))

    def step_in(self, tx: Tx, incident_id: str, event: Event | list[Event], now: datetime) -> StepResult:
        """One event, or several fed in order (a leg's page outcomes that arrived together): one row
        read, one row write, whatever their number. What the walk ignored, and why, is noted in the
        timeline when a person or a publisher did it."""
        events = event if isinstance(event, list) else [event]
        row = tx.read(_READ_INCIDENT, {"id": incident_id}).first()
        if row is None:
            return StepResult("unknown")
        walk = new_walk = Walk.from_dict(incident_id, Plan.from_dict(row.plan), row.state)
        commands: list[walk_.Command] = []
        recorded: dict[str, Recorded] = {}  # page key → what its row says (the walk decides what changes)
        keys = sorted({e.page.key for e in events if isinstance(e, (PageSent, PageFailed))})
        if keys:
            recorded = {p.key: Recorded(p.status, p.ref, p.reason) for p in tx.read(_READ_PAGES, {"id": incident_id, "keys": keys})}
        changed: dict[str, dict[str, Any]] = {}  # page key → its new columns
        ignored: list[tuple[Event, Ignored]] = []
        for each in events:
            if isinstance(each, (PageSent, PageFailed)):
                each = replace(each, recorded=recorded.get(each.page.key))
            new_walk, more = walk_.decide(new_walk, each, now, self._on_call(tx, walk_.needs_on_call(new_walk, each), now))
            if (why := walk_.ignored(more)) is not None:
                ignored.append((each, why))
                continue
            for command in more:
                if isinstance(command, walk_.SetPage):
                    recorded[command.key] = Recorded(command.status, command.ref, command.reason)
                    changed[command.key] = {"status": command.status, "ref": command.ref, "reason": command.reason}
            commands += more
        self._update_pages(tx, incident_id, changed, now)
        for each, why in ignored:
            if why.noteworthy:
                self._note(tx, incident_id, now, f"{walk_.describe(each)} changed nothing: {why.reason}")
        if not commands:
            return StepResult("unchanged", walk, [], row.summary, ignored=ignored[-1][1] if ignored else None, caller=row.caller)
        values: dict[str, Any] = dict(status=new_walk.status, deadline=new_walk.deadline, state=new_walk.to_dict(), updated_at=now)
        if new_walk.acked_by != row.acked_by and (new_walk.acked_by or new_walk.status in walk_.ACTIVE):
            values["acked_by"] = new_walk.acked_by  # taken, or open again (an expired acknowledgement)
        if new_walk.status in (walk_.ACKNOWLEDGED, walk_.RESOLVED) and row.closed_at is None:
            values["closed_at"] = now
        elif new_walk.status in walk_.ACTIVE and row.closed_at is not None:
            values["closed_at"] = None
        if not walk_.driven(new_walk.status, new_walk.deadline is not None):  # nothing left to drive
            values["owner"] = None
        elif any(isinstance(c, (walk_.ArmWindow, PageCmd)) for c in commands):
            values["owner"] = self.replica  # its window and pages are ours now (a crash: re-sent by the next owner)
        tx.execute(_UPDATE_INCIDENT, {"_id": incident_id, **values})
        wanted = {c.contact for c in commands if isinstance(c, (PageCmd, walk_.Notify))}
        contacts = self._contacts(tx, wanted)
        self._record(tx, new_walk, commands, now)
        codes = self._codes(tx, incident_id, commands, contacts, now)
        return StepResult("changed", new_walk, commands, row.summary, contacts, row.opened_at, codes, caller=row.caller,
                          opted_out=tx.opted_out & contacts.keys())

    @staticmethod
    def _update_pages(tx: Tx, incident_id: str, changed: dict[str, dict[str, Any]], now: datetime) -> None:
        """Page rows of recorded outcomes, in one executemany."""
        if changed:
            tx.execute(_UPDATE_PAGE, [{"_id": incident_id, "_key": key, "updated_at": now, **columns} for key, columns in changed.items()])

    def reject(self, reason: str, now: datetime, incident_id: str | None, msg_id: str) -> None:
        """Publish `rejected`: in the incident's timeline (the walk gives it the next seq) when the
        incident exists, else on its own."""

        def write(tx: Tx) -> None:
            if incident_id and self.step_in(tx, incident_id, walk_.Reject(reason), now).outcome != "unknown":
                return
            payload: dict[str, Any] = {"event": "rejected", "at": rfc3339(now), "reason": reason}
            if incident_id:
                payload["incident_id"] = incident_id
            tx.insert(OutboxRow.__table__, dict(incident_id=None, subject=f"{EVENT_PREFIX}.rejected", msg_id=msg_id,
                                                payload=payload, created_at=now))

        write_one(self.engine, write)

    # -- recovery -----------------------------------------------------------------------------------

    def windows_of(self, incident_ids: Iterable[str]) -> list[tuple[str, int, int, datetime]]:
        """(incident, cycle, slot, deadline) of those incidents this replica drives that wait on a timer:
        a leg's window (slot = leg index) or an acknowledgement's (walk.ACK_TIMER + n, SPEC §11)."""
        ids = sorted(set(incident_ids))
        out = []
        with read_session(self.engine) as session:
            for chunk in _chunks(ids):
                # The two numbers, not the whole state: decoding every state's JSON was most of a restart's
                # reading. Status and owner are checked here, not in SQL: with them in the WHERE clause
                # SQLite chose the status index and read every open incident for each chunk of ids.
                state = IncidentRow.__table__.c.state
                rows = session.execute(
                    sa.select(IncidentRow.id, IncidentRow.status, IncidentRow.owner, state["cycle"].as_integer(),
                              state["leg_index"].as_integer(), state["ack_timer"].as_integer(), IncidentRow.deadline)
                    .where(IncidentRow.id.in_(chunk))
                )
                for i, status, owner, c, leg, timer, d in rows:
                    if owner != self.replica or d is None:
                        continue
                    if status == walk_.OPEN:
                        out.append((i, int(c), int(leg), d))
                    elif status == walk_.ACKNOWLEDGED:
                        out.append((i, int(c), walk_.ACK_TIMER + int(timer or 0), d))
        return out

    def statuses(self, incident_ids: Iterable[str]) -> dict[str, Standing]:
        """incident → its status, owner, and whether it still needs driving."""
        ids = sorted(set(incident_ids))
        out: dict[str, Standing] = {}
        with read_session(self.engine) as session:
            for chunk in _chunks(ids):
                rows = session.execute(
                    sa.select(IncidentRow.id, IncidentRow.status, IncidentRow.owner, IncidentRow.deadline, IncidentRow.state)
                    .where(IncidentRow.id.in_(chunk))
                )
                out.update({
                    i: Standing(status, owner, walk_.driven(status, deadline is not None), frozenset((state or {}).get("live", ())))
                    for i, status, owner, deadline, state in rows
                })
        return out

    def unsent_pages(self, incident_ids: Iterable[str]) -> list[tuple[str, PageCmd, bool]]:
        """(incident, page, resent) of pages recorded but never confirmed sent or failed: a crash came between."""
        ids = sorted(set(incident_ids))
        out: list[tuple[str, PageCmd, bool]] = []
        with read_session(self.engine) as session:
            for chunk in _chunks(ids):
                rows = session.scalars(
                    sa.select(PageRow).where(PageRow.status == "pending", PageRow.incident_id.in_(chunk))
                    .order_by(PageRow.created_at)
                )
                out += [(r.incident_id, self.page_cmd(r), r.resent) for r in rows]
        return out

    @staticmethod
    def page_cmd(row: PageRow) -> PageCmd:
        return PageCmd(row.key, row.contact, row.channel, row.cycle, row.leg_index, row.leg, row.window_s)

    def call_refs(self, incident_id: str, keys: Iterable[str]) -> list[str]:
        """The provider's ids of these pages that were placed (sent), for stopping them."""
        with read_session(self.engine) as session:
            return list(session.scalars(sa.select(PageRow.ref).where(
                PageRow.incident_id == incident_id, PageRow.key.in_(list(keys)), PageRow.status == walk_.PAGE_SENT,
                PageRow.ref.is_not(None),
            )))

    def page(self, incident_id: str, key: str) -> PageRow | None:
        with read_session(self.engine) as session:
            return session.get(PageRow, (incident_id, key))

    @staticmethod
    def delivery_in(tx: Tx, incident_id: str, key: str, status: str, now: datetime) -> None:
        """What the provider last said of a page (ringing, answered, voicemail, delivered …)."""
        tx.execute(_UPDATE_PAGE, [{"_id": incident_id, "_key": key, "delivery": status[:32], "updated_at": now}])

    def note_in(self, tx: Tx, incident_id: str, text: str, now: datetime) -> None:
        """Something worth the audit trail that is not an event (a delivery report, a voicemail)."""
        if tx.read(_STATUS, {"id": incident_id}).first() is not None:
            self._note(tx, incident_id, now, text)

    def claim_resend(self, page: PageCmd, incident_id: str, now: datetime) -> StepResult | None:
        """Mark a pending page as re-sent (once only) if it still matters (walk.is_current); returns
        what sending needs, its SMS code included (the one it already has)."""
        return write_one(self.engine, lambda tx: self.claim_resend_in(tx, page, incident_id, now))

    def claim_resend_in(self, tx: Tx, page: PageCmd, incident_id: str, now: datetime) -> StepResult | None:
        """`now` is fixed by the caller before the step is submitted: a re-run of this step (the
        group commit may run it twice) finds its own claim (`updated_at == now`) and returns it
        again, instead of taking the committed first run for someone else's re-send."""
        row = tx.session.get(PageRow, (incident_id, page.key), with_for_update=True)
        incident = tx.session.get(IncidentRow, incident_id)
        ours = row is not None and row.resent and row.updated_at == now
        if row is None or row.status != walk_.PAGE_PENDING or (row.resent and not ours) or incident is None or incident.owner != self.replica:
            return None  # gone, settled, re-sent already, or another replica drives the incident now
        walk = Walk.from_dict(incident_id, Plan.from_dict(incident.plan), incident.state)
        if not walk_.is_current(walk, page.key):  # its leg is over, or somebody already took the incident
            row.status, row.reason = walk_.PAGE_ABANDONED, "interrupted by a restart after its leg ended"
            return None
        row.resent, row.updated_at = True, now
        contacts = self._contacts(tx, {page.contact})
        codes = self._codes(tx, incident_id, [page], contacts, now)
        return StepResult("resend", walk, [page], incident.summary, contacts, codes=codes, caller=incident.caller,
                          opted_out=tx.opted_out & contacts.keys())

    # -- reading ------------------------------------------------------------------------------------

    def get(self, incident_id: str) -> IncidentRow | None:
        with read_session(self.engine) as session:
            return session.get(IncidentRow, incident_id)

    def timeline(self, incident_id: str) -> tuple[list[IncidentEventRow], list[IncidentNoteRow]]:
        with read_session(self.engine) as session:
            events = list(
                session.scalars(
                    sa.select(IncidentEventRow).where(IncidentEventRow.incident_id == incident_id).order_by(IncidentEventRow.seq)
                )
            )
            notes = list(
                session.scalars(
                    sa.select(IncidentNoteRow).where(IncidentNoteRow.incident_id == incident_id).order_by(IncidentNoteRow.id)
                )
            )
            return events, notes

    def pages(self, incident_id: str) -> list[PageRow]:
        with read_session(self.engine) as session:
            return list(session.scalars(sa.select(PageRow).where(PageRow.incident_id == incident_id).order_by(PageRow.created_at)))

    def list(self, active_only: bool = False, limit: int = 100) -> list[IncidentRow]:
        with read_session(self.engine) as session:
            query = sa.select(IncidentRow).order_by(IncidentRow.opened_at.desc()).limit(limit)
            if active_only:
                query = query.where(IncidentRow.status.in_(walk_.ACTIVE))
            return list(session.scalars(query))

    def timezones(self, versions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], str]:
        """(ladder, version) → the ladder's time zone then: times shown to people use it (SPEC §2)."""
        wanted = set(versions)
        if not wanted:
            return {}
        with read_session(self.engine) as session:
            rows = session.execute(
                sa.select(LadderVersionRow.ladder, LadderVersionRow.version, LadderVersionRow.snapshot).where(
                    sa.tuple_(LadderVersionRow.ladder, LadderVersionRow.version).in_(sorted(wanted))
                )
            )
            return {(name, version): (snapshot or {}).get("timezone") or "UTC" for name, version, snapshot in rows}

    def count_by_status(self) -> dict[str, int]:
        with read_session(self.engine) as session:
            rows = session.execute(sa.select(IncidentRow.status, sa.func.count()).group_by(IncidentRow.status))
            return {status: count for status, count in rows}

    # -- inside a transaction -----------------------------------------------------------------------

    @staticmethod
    def _resolve_ladder(tx: Tx, requested: str, default: str | None, incident_id: str) -> tuple[str, bool]:
        def usable(name: str | None) -> bool:
            if not name or not NAME_RE.fullmatch(name):
                return False
            head = IncidentStore._head(tx, name)
            return head is not None and head.deleted_at is None

        if usable(requested):
            return requested, False
        if usable(default):
            return default, True  # type: ignore[return-value]
        why = "no ESCALATOR_DEFAULT_LADDER is set" if not default else f"the default ladder {default!r} does not exist"
        raise Rejected(f"unknown ladder {requested!r} and {why}", incident_id)

    @staticmethod
    def _head(tx: Tx, name: str) -> Any:
        """A ladder's current version and deletion, looked up once per transaction (a group commit
        opens many incidents on the same ladder)."""
        if name not in tx.ladder_heads:
            tx.ladder_heads[name] = tx.read(_LADDER_HEAD, {"name": name}).first()
        return tx.ladder_heads[name]

    @staticmethod
    def _contacts(tx: Tx, ids: Iterable[str]) -> dict[str, Contact]:
        """Contacts as paging sees them: push tokens FCM reported dead are left out. Read once per
        transaction: a group commit of many incidents on one ladder asks for the same people."""
        ids = set(ids)
        known = tx.contacts
        missing = ids - known.keys()
        if missing:
            rows = tx.read(_CONTACTS, {"ids": sorted(missing)}).all()
            dead = {(r.id, r.token) for r in rows if r.token is not None}
            tx.opted_out.update(r.id for r in rows if r.opted_out is not None)
            known.update(dict.fromkeys(missing))
            for r in rows:
                known[r.id] = Contact.model_construct(
                    id=r.id, name=r.name, phone=r.phone,
                    push_tokens=tuple(t for t in r.push_tokens or () if (r.id, t) not in dead),
                )
        return {i: c for i in ids if (c := known[i]) is not None}

    def _on_call(self, tx: Tx, schedules: frozenset[str], now: datetime) -> walk_.OnCall | None:
        """Who is on call at `now` on these schedules, as the walk takes it (escalator.oncall decides
        who; the contacts say how they can be reached): a few reads per transaction, none per person."""
        if not schedules:
            return None
        people: dict[str, list[str]] = {}
        for name, (schedule, overrides) in self.rosters.read(tx, schedules, now).items():
            try:
                people[name] = [p.contact for p in oncall.on_call(schedule, overrides, now)]
            except (ArithmeticError, ValueError):  # never stop a walk: that leg finds nobody on call and passes
                log.exception("who is on call on schedule %s could not be computed; nobody is on call there", name)
        contacts = self._contacts(tx, {c for ids in people.values() for c in ids})
        return {
            name: tuple(walk_.Reach(c, bool(contacts[c].phone), bool(contacts[c].push_tokens)) for c in ids if c in contacts)
            for name, ids in people.items()
        }

    def opt_out(self, phone: str, now: datetime, source: str) -> bool:
        """The provider refused a text: the number opted out (escalator.store.opt_outs)."""
        return opt_outs.opt_out(self.engine, phone, now, source)

    def retire_push_tokens(self, contact_id: str, tokens: Iterable[str], now: datetime) -> None:
        """Tokens FCM reported UNREGISTERED: skipped from now on (they stay on the contact for the operator)."""
        with write_session(self.engine) as session:
            for token in set(tokens):
                if session.get(DeadPushTokenRow, (contact_id, token)) is None:
                    session.add(DeadPushTokenRow(contact_id=contact_id, token=token, at=now))

    def _codes(
        self, tx: Tx, incident_id: str, commands: list[walk_.Command], contacts: dict[str, Contact], now: datetime,
        fresh: bool = False,
    ) -> dict[str, str]:
        """Reply codes of SMS pages, in the transaction that decides (or re-sends) them: the one
        place codes are allocated (escalator.store.sms_codes). The dict is filled in when the
        transaction's steps are done, before it commits."""
        out: dict[str, str] = {}
        if self.codes is None:
            return out
        for command in commands:
            if isinstance(command, PageCmd) and command.channel == walk_.SMS:
                contact = contacts.get(command.contact)
                if contact is not None and contact.phone:
                    tx.code_requests.append(CodeRequest(contact.phone, incident_id, command, now, fresh, out))
        if tx.code_requests:
            tx.before_commit(self.codes.allocate)
        return out

    @staticmethod
    def _note(tx: Tx, incident_id: str, now: datetime, text: str) -> None:
        tx.insert(_NOTES, dict(incident_id=incident_id, at=now, note=text))

    @staticmethod
    def _record(tx: Tx, walk: Walk, commands: list[walk_.Command], now: datetime) -> None:
        """Timeline, outbox and page rows of a step. Queued, and written with one INSERT per table
        for the whole transaction just before it commits (a group commit writes hundreds)."""
        for command in commands:
            if isinstance(command, Emit):
                tx.insert(IncidentEventRow.__table__, dict(
                    incident_id=walk.incident_id, seq=command.seq, event=command.event, at=command.at, data=command.fields,
                ))
                payload = {
                    "incident_id": walk.incident_id, "event": command.event, "at": rfc3339(command.at), "seq": command.seq,
                    **command.fields,
                }
                tx.insert(OutboxRow.__table__, dict(
                    incident_id=walk.incident_id, subject=f"{EVENT_PREFIX}.{command.event}",
                    msg_id=f"{walk.incident_id}:{command.seq}", payload=payload, created_at=now,
                ))
            elif isinstance(command, PageCmd):
                tx.insert(_PAGES, dict(
                    incident_id=walk.incident_id, key=command.key, contact=command.contact, channel=command.channel,
                    cycle=command.cycle, leg_index=command.leg_index, leg=command.leg, window_s=command.window_s,
                    status=walk_.PAGE_PENDING, resent=False, reason=None, ref=None, created_at=now, updated_at=now,
                ))
