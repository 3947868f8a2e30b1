"""Ladders, schedules and contacts in the database: reads, and writes that always leave a new
version. Ladders and schedules are versioned the same way (`_Kind`): a head row naming the current
version, immutable version rows with the canonical document, deletions as versions too.

Every write runs in one transaction that first takes the catalog lock (BEGIN IMMEDIATE on SQLite,
an advisory lock on PostgreSQL), re-reads what it changes and re-checks every rule against what
is committed now. So two operators editing at once never lose an update, and nothing invalid
or half-written is ever committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from escalator.errors import InvalidInput, Problem
from escalator.ladder_files import Declarations, check_references
from escalator.ladders import (
    Contact,
    Ladder,
    build_contact,
    build_ladder,
    describe_change,
    format_loc,
    reference_problems,
    unsuited,
)
from escalator.schedules import ScheduleDoc, build_schedule, describe_schedule_change
from escalator.store.db import read_session, write_session
from escalator.store.tables import (
    ContactRow,
    ContactVersionRow,
    LadderRow,
    LadderVersionRow,
    OverrideRow,
    ScheduleRow,
    ScheduleVersionRow,
)

D = TypeVar("D", Ladder, ScheduleDoc)
MAX_COMMENT = 500  # an override's comment (its column's length)


@dataclass(frozen=True)
class Version(Generic[D]):
    """One immutable version of a ladder or schedule; `definition` is None for a deletion."""

    name: str
    version: int
    definition: D | None
    actor: str
    created_at: datetime
    change: str
    comment: str | None

    @property
    def deleted(self) -> bool:
        return self.definition is None


LadderVersion = Version[Ladder]
ScheduleVersion = Version[ScheduleDoc]


@dataclass(frozen=True)
class _Kind(Generic[D]):
    """How one versioned kind of document is stored: its tables, parsing and change description."""

    word: str
    head: Any  # LadderRow / ScheduleRow
    rows: Any  # LadderVersionRow / ScheduleVersionRow
    key: str  # the version table's column naming the document
    parse: Callable[[dict[str, Any]], D]
    build: Callable[[dict[str, Any]], D]  # validate afresh: only a valid document is stored
    describe: Callable[[D | None, D | None], str]

    def version(self, row: Any) -> Version[D]:
        snapshot = row.snapshot
        return Version(getattr(row, self.key), row.version, None if snapshot is None else self.parse(snapshot),
                       row.actor, row.created_at, row.change, row.comment)


LADDERS: _Kind[Ladder] = _Kind("ladder", LadderRow, LadderVersionRow, "ladder", Ladder.model_validate, build_ladder, describe_change)
SCHEDULES: _Kind[ScheduleDoc] = _Kind(
    "schedule", ScheduleRow, ScheduleVersionRow, "schedule", ScheduleDoc.model_validate, build_schedule, describe_schedule_change
)


@dataclass(frozen=True)
class Override:
    """A stored `escalator cover`."""

    id: int
    schedule: str
    by: str
    instead_of: str | None
    add: bool
    start: datetime
    until: datetime
    comment: str | None
    created_at: datetime
    created_by: str
    removed_at: datetime | None
    removed_by: str | None


def _override(row: OverrideRow) -> Override:
    return Override(row.id, row.schedule, row.by, row.instead_of, row.add, row.start, row.until, row.comment,
                    row.created_at, row.created_by, row.removed_at, row.removed_by)


@dataclass(frozen=True)
class ContactRecord:
    contact: Contact
    version: int
    updated_at: datetime
    updated_by: str
    removed: bool


@dataclass
class ApplyReport:
    """What `apply` did: per contact and ladder, created / updated / unchanged, and the version."""

    contacts: list[dict[str, object]] = field(default_factory=list)
    ladders: list[dict[str, object]] = field(default_factory=list)
    schedules: list[dict[str, object]] = field(default_factory=list)


def _contact_from_row(row: ContactRow) -> Contact:
    return Contact(id=row.id, name=row.name, phone=row.phone, push_tokens=tuple(row.push_tokens or ()))


def _not_found(kind: str, key: str) -> InvalidInput:
    return InvalidInput(Problem(f"no {kind} named {key!r}", field=kind))


class Catalog:
    def __init__(self, engine: Engine):
        self.engine = engine

    # -- reads ------------------------------------------------------------------------------------

    def contacts(self, include_removed: bool = False) -> list[ContactRecord]:
        with read_session(self.engine) as session:
            query = sa.select(ContactRow).order_by(ContactRow.id)
            if not include_removed:
                query = query.where(ContactRow.removed_at.is_(None))
            return [
                ContactRecord(_contact_from_row(r), r.version, r.updated_at, r.updated_by, r.removed_at is not None)
                for r in session.scalars(query)
            ]

    def contact_map(self) -> dict[str, Contact]:
        with read_session(self.engine) as session:
            return self._active_contacts(session)

    def ladders(self) -> list[LadderVersion]:
        """The current version of every ladder that is not deleted."""
        return self._currents(LADDERS)

    def schedules(self) -> list[ScheduleVersion]:
        """The current version of every schedule that is not deleted."""
        return self._currents(SCHEDULES)

    def ladder(self, name: str, version: int | None = None) -> LadderVersion:
        """A ladder's current version (refused if deleted), or any version of it by number."""
        return self._one(LADDERS, name, version)

    def schedule(self, name: str, version: int | None = None) -> ScheduleVersion:
        return self._one(SCHEDULES, name, version)

    def history(self, name: str) -> list[LadderVersion]:
        return self._history(LADDERS, name)

    def schedule_history(self, name: str) -> list[ScheduleVersion]:
        return self._history(SCHEDULES, name)

    def _currents(self, kind: _Kind[D]) -> list[Version[D]]:
        with read_session(self.engine) as session:
            return [kind.version(r) for r in session.scalars(self._current_rows(kind).order_by(getattr(kind.rows, kind.key)))]

    @staticmethod
    def _current_rows(kind: _Kind[D]) -> Any:
        return (
            sa.select(kind.rows)
            .join(kind.head, sa.and_(kind.head.name == getattr(kind.rows, kind.key), kind.head.version == kind.rows.version))
            .where(kind.head.deleted_at.is_(None))
        )

    def _one(self, kind: _Kind[D], name: str, version: int | None) -> Version[D]:
        with read_session(self.engine) as session:
            head = session.get(kind.head, name)
            if head is None:
                raise _not_found(kind.word, name)
            if version is None:
                if head.deleted_at is not None:
                    raise InvalidInput(
                        Problem(f"{kind.word} {name!r} was deleted (see `escalator {kind.word} history {name}`)", field=kind.word)
                    )
                version = head.version
            row = session.get(kind.rows, (name, version))
            if row is None:
                raise InvalidInput(Problem(f"{kind.word} {name!r} has no version {version} (latest is {head.version})", field="--version"))
            return kind.version(row)

    def _history(self, kind: _Kind[D], name: str) -> list[Version[D]]:
        with read_session(self.engine) as session:
            column = getattr(kind.rows, kind.key)
            rows = list(session.scalars(sa.select(kind.rows).where(column == name).order_by(kind.rows.version)))
            if not rows:
                raise _not_found(kind.word, name)
            return [kind.version(r) for r in rows]

    # -- apply ------------------------------------------------------------------------------------

    def apply(self, declared: Declarations, actor: str, now: datetime, comment: str | None = None) -> ApplyReport:
        """Write everything the files declare in one transaction, or nothing at all."""
        report = ApplyReport()
        with write_session(self.engine, catalog=True) as session:
            contacts = self._active_contacts(session)
            schedules = self._current_docs(session, SCHEDULES)
            problems = check_references(declared, contacts, schedules)
            covers = self._covers(session, now)
            problems += [  # people covering by override must suit the declared ladders too
                origin.problem(loc, msg)
                for ladder, origin in declared.ladders
                for loc, msg in reference_problems(ladder, {**contacts, **declared.contact_map()}, covers)
                if loc[2] == "schedule" and "unknown schedule" not in msg
            ]
            # Contacts and schedules changed by these files must still suit the stored ladders that use them.
            merged = {**contacts, **declared.contact_map()}
            people = _people({**schedules, **declared.schedule_map()}, covers)
            declared_ladders = {lad.name for lad, _ in declared.ladders}
            origins = {c.id: o for c, o in declared.contacts} | {sch.name: o for sch, o in declared.schedules}
            for name, ladder in self._current_docs(session, LADDERS).items():
                if name in declared_ladders:
                    continue
                for loc, msg in reference_problems(ladder, merged, people):
                    # Blame the declared file that broke it: the schedule's, else the contact's.
                    leg = ladder.legs[loc[1]]
                    named = [leg.contacts[loc[3]]] if loc[2] == "contacts" else [leg.schedules[loc[3] if len(loc) > 3 else 0]]
                    named += [c for c in origins if repr(c) in msg]
                    origin = next((origins[c] for c in named if c in origins), None)
                    text = f"{msg}, in stored ladder {name!r}"
                    problems.append(origin.problem((), text) if origin else Problem(text))
            if problems:
                raise InvalidInput(problems)

            for contact, origin in declared.contacts:
                outcome, version = self._write_contact(session, contact, actor, now, f"applied from {origin.file}", comment)
                report.contacts.append({"id": contact.id, "outcome": outcome, "version": version})
            for schedule, origin in declared.schedules:
                outcome, version = self._write(session, SCHEDULES, schedule.name, schedule, actor, now, f"applied from {origin.file}", comment)
                report.schedules.append({"name": schedule.name, "outcome": outcome, "version": version})
            for ladder, origin in declared.ladders:
                outcome, version = self._write(session, LADDERS, ladder.name, ladder, actor, now, f"applied from {origin.file}", comment)
                report.ladders.append({"name": ladder.name, "outcome": outcome, "version": version})
        return report

    # -- ladder and schedule edits ------------------------------------------------------------------

    def edit_ladder(
        self,
        name: str,
        edit: Callable[[Ladder], Ladder],
        actor: str,
        now: datetime,
        comment: str | None = None,
    ) -> LadderVersion | None:
        """Apply a pure edit to the current version; returns the new version, None if nothing changed."""
        with write_session(self.engine, catalog=True) as session:
            current = self._current(session, LADDERS, name)
            updated = edit(current)
            self._check_refs(session, updated, now)
            outcome, version = self._write(session, LADDERS, name, updated, actor, now, None, comment)
            if outcome == "unchanged":
                return None
            return LADDERS.version(session.get(LadderVersionRow, (name, version)))

    def rollback(
        self, name: str, to_version: int | None, actor: str, now: datetime, comment: str | None = None
    ) -> LadderVersion | None:
        """A new version whose content is that of an earlier one (default: the one before the latest)."""
        return self._rollback(LADDERS, name, to_version, actor, now, comment)

    def rollback_schedule(
        self, name: str, to_version: int | None, actor: str, now: datetime, comment: str | None = None
    ) -> ScheduleVersion | None:
        return self._rollback(SCHEDULES, name, to_version, actor, now, comment)

    def _rollback(
        self, kind: _Kind[D], name: str, to_version: int | None, actor: str, now: datetime, comment: str | None
    ) -> Version[D] | None:
        with write_session(self.engine, catalog=True) as session:
            head = self._head(session, kind, name)
            target_version = head.version - 1 if to_version is None else to_version
            if target_version < 1 or target_version > head.version:
                raise InvalidInput(
                    Problem(f"{kind.word} {name!r} has versions 1 to {head.version}; cannot roll back to {target_version}", field="--to")
                )
            target = session.get(kind.rows, (name, target_version))
            if target is None or target.snapshot is None:
                raise InvalidInput(Problem(f"version {target_version} of {name!r} is a deletion; pick another", field="--to"))
            definition = kind.parse(target.snapshot)
            if isinstance(definition, Ladder):
                self._check_refs(session, definition, now)
            else:
                self._check_schedule(session, definition, now)
            outcome, version = self._write(
                session, kind, name, definition, actor, now, None, comment, prefix=f"rollback to v{target_version}: "
            )
            if outcome == "unchanged":
                return None
            return kind.version(session.get(kind.rows, (name, version)))

    def delete_ladder(
        self, name: str, actor: str, now: datetime, comment: str | None = None, protected: Iterable[str] = ()
    ) -> LadderVersion:
        with write_session(self.engine, catalog=True) as session:
            self._current(session, LADDERS, name)
            if name in set(protected):
                raise InvalidInput(
                    Problem(
                        f"{name!r} is ESCALATOR_DEFAULT_LADDER: incidents for unknown ladders walk it; "
                        "point the setting elsewhere first",
                        field="ladder",
                    )
                )
            _, version = self._write(session, LADDERS, name, None, actor, now, None, comment)
            return LADDERS.version(session.get(LadderVersionRow, (name, version)))

    def delete_schedule(self, name: str, actor: str, now: datetime, comment: str | None = None) -> ScheduleVersion:
        """Refused while a ladder's leg names it (incidents would page nobody there)."""
        with write_session(self.engine, catalog=True) as session:
            self._current(session, SCHEDULES, name)
            users = sorted(n for n, lad in self._current_docs(session, LADDERS).items() if name in lad.schedule_ids())
            if users:
                raise InvalidInput(
                    Problem(f"schedule {name!r} is named by ladder {', '.join(users)}: take it off those legs first", field="schedule")
                )
            _, version = self._write(session, SCHEDULES, name, None, actor, now, None, comment)
            return SCHEDULES.version(session.get(ScheduleVersionRow, (name, version)))

    # -- overrides ----------------------------------------------------------------------------------

    def add_override(
        self,
        schedule: str,
        by: str,
        start: datetime,
        until: datetime,
        actor: str,
        now: datetime,
        instead_of: str | None = None,
        add: bool = False,
        comment: str | None = None,
    ) -> Override:
        """`escalator cover`: refused when the schedule is unknown, `until` is not after `start`, or
        `by` cannot be reached on a channel a leg paging the schedule needs."""
        if until <= start:
            raise InvalidInput(Problem("--until must be after --from", field="--until"))
        if until <= now:
            raise InvalidInput(Problem("--until is in the past: the override would never apply", field="--until"))
        if instead_of is not None and add:
            raise InvalidInput(Problem("give --instead-of or --add, not both", field="--add"))
        if comment is not None and len(comment) > MAX_COMMENT:
            raise InvalidInput(Problem(f"must be at most {MAX_COMMENT} characters", field="--comment"))
        with write_session(self.engine, catalog=True) as session:
            self._current(session, SCHEDULES, schedule)
            contacts = self._active_contacts(session)
            if by not in contacts:
                raise InvalidInput(Problem(f"no contact named {by!r}", field="--by"))
            if instead_of is not None and instead_of not in contacts:
                raise InvalidInput(Problem(f"no contact named {instead_of!r}", field="--instead-of"))
            for name, ladder in sorted(self._current_docs(session, LADDERS).items()):
                for leg in ladder.legs:
                    if schedule in leg.schedules and (why := unsuited(contacts, by, leg)) is not None:
                        raise InvalidInput(Problem(f"{why}, in ladder {name!r}", field="--by"))
            row = OverrideRow(schedule=schedule, by=by, instead_of=instead_of, add=add, start=start, until=until,
                              comment=comment, created_at=now, created_by=actor)
            session.add(row)
            session.flush()
            return _override(row)

    def remove_override(self, override_id: int, actor: str, now: datetime) -> Override:
        with write_session(self.engine, catalog=True) as session:
            row = session.get(OverrideRow, override_id)
            if row is None or row.removed_at is not None:
                raise InvalidInput(Problem(f"no override {override_id}" + (" (already removed)" if row else ""), field="id"))
            row.removed_at, row.removed_by = now, actor
            session.flush()
            return _override(row)

    def overrides(
        self, schedules: Iterable[str] | None = None, since: datetime | None = None, include_removed: bool = False
    ) -> list[Override]:
        """Overrides in creation order: of these schedules (default all), ending after `since`."""
        with read_session(self.engine) as session:
            return self._overrides(session, schedules, since, include_removed)

    @staticmethod
    def _overrides(
        session: Session, schedules: Iterable[str] | None, since: datetime | None, include_removed: bool = False
    ) -> list[Override]:
        query = sa.select(OverrideRow).order_by(OverrideRow.id)
        if schedules is not None:
            query = query.where(OverrideRow.schedule.in_(sorted(set(schedules))))
        if since is not None:
            query = query.where(OverrideRow.until > since)
        if not include_removed:
            query = query.where(OverrideRow.removed_at.is_(None))
        return [_override(r) for r in session.scalars(query)]

    # -- contact edits ----------------------------------------------------------------------------

    def add_contact(self, contact: Contact, actor: str, now: datetime, comment: str | None = None) -> int:
        with write_session(self.engine, catalog=True) as session:
            row = session.get(ContactRow, contact.id)
            if row is not None and row.removed_at is None:
                raise InvalidInput(
                    Problem(f"contact {contact.id!r} already exists: use `escalator contact edit`", field="id")
                )
            return self._write_contact(session, contact, actor, now, None, comment)[1]

    def edit_contact(
        self, contact_id: str, edit: Callable[[Contact], Contact], actor: str, now: datetime, comment: str | None = None
    ) -> tuple[Contact, int | None]:
        """Returns the contact as it now is and the new version (None if nothing changed)."""
        with write_session(self.engine, catalog=True) as session:
            contacts = self._active_contacts(session)
            if contact_id not in contacts:
                raise _not_found("contact", contact_id)
            updated = edit(contacts[contact_id])
            if updated == contacts[contact_id]:
                return updated, None
            contacts[contact_id] = updated
            people = _people(self._current_docs(session, SCHEDULES), self._covers(session, now))
            problems = [
                Problem(f"{msg}, in ladder {name!r}", field=format_loc(loc))
                for name, ladder in self._current_docs(session, LADDERS).items()
                for loc, msg in reference_problems(ladder, contacts, people)
                if repr(contact_id) in msg
            ]
            if problems:
                raise InvalidInput(problems)
            return updated, self._write_contact(session, updated, actor, now, None, comment)[1]

    def remove_contact(self, contact_id: str, actor: str, now: datetime, comment: str | None = None) -> int:
        with write_session(self.engine, catalog=True) as session:
            row = session.get(ContactRow, contact_id)
            if row is None or row.removed_at is not None:
                raise _not_found("contact", contact_id)
            users = sorted(name for name, lad in self._current_docs(session, LADDERS).items() if contact_id in lad.contact_ids())
            if users:
                raise InvalidInput(
                    Problem(
                        f"contact {contact_id!r} is on ladder {', '.join(users)}: take them off the ladder first",
                        field="contact",
                    )
                )
            rotas = sorted(name for name, sch in self._current_docs(session, SCHEDULES).items() if contact_id in sch.contact_ids())
            covering = [o for o in self._overrides(session, None, now) if o.by == contact_id]
            if covering:
                o = covering[0]
                raise InvalidInput(
                    Problem(
                        f"contact {contact_id!r} covers schedule {o.schedule} (override {o.id}): "
                        f"`escalator cover remove {o.id}` first",
                        field="contact",
                    )
                )
            if rotas:
                raise InvalidInput(
                    Problem(
                        f"contact {contact_id!r} is on schedule {', '.join(rotas)}: take them off its rotations first",
                        field="contact",
                    )
                )
            row.version += 1
            row.removed_at = now
            row.updated_at, row.updated_by = now, actor
            session.add(
                ContactVersionRow(
                    contact_id=contact_id, version=row.version, snapshot=None, actor=actor, created_at=now,
                    change="removed", comment=comment,
                )
            )
            return row.version

    # -- inside a transaction ---------------------------------------------------------------------

    @staticmethod
    def _active_contacts(session: Session) -> dict[str, Contact]:
        rows = session.scalars(sa.select(ContactRow).where(ContactRow.removed_at.is_(None)))
        return {r.id: _contact_from_row(r) for r in rows}

    @staticmethod
    def _current_docs(session: Session, kind: _Kind[D]) -> dict[str, D]:
        return {getattr(r, kind.key): kind.parse(r.snapshot) for r in session.scalars(Catalog._current_rows(kind))}

    @staticmethod
    def _covers(session: Session, now: datetime) -> dict[str, set[str]]:
        """schedule → who covers it by an override that is not over."""
        out: dict[str, set[str]] = {}
        for o in Catalog._overrides(session, None, now):
            out.setdefault(o.schedule, set()).add(o.by)
        return out

    @staticmethod
    def _head(session: Session, kind: _Kind[D], name: str) -> Any:
        head = session.get(kind.head, name)
        if head is None:
            raise _not_found(kind.word, name)
        return head

    def _current(self, session: Session, kind: _Kind[D], name: str) -> D:
        head = self._head(session, kind, name)
        if head.deleted_at is not None:
            raise InvalidInput(
                Problem(f"{kind.word} {name!r} was deleted; `escalator {kind.word} rollback {name}` restores it", field=kind.word)
            )
        return kind.parse(session.get(kind.rows, (name, head.version)).snapshot)

    def _check_refs(self, session: Session, ladder: Ladder, now: datetime) -> None:
        people = _people(self._current_docs(session, SCHEDULES), self._covers(session, now))
        problems = [
            Problem(msg, field=format_loc(loc)) for loc, msg in reference_problems(ladder, self._active_contacts(session), people)
        ]
        if problems:
            raise InvalidInput(problems)

    def _check_schedule(self, session: Session, schedule: ScheduleDoc, now: datetime) -> None:
        """A schedule about to become current: its contacts exist and suit the ladders paging it."""
        contacts = self._active_contacts(session)
        problems = [
            Problem(f"unknown contact {c!r} (rotation {r.name!r})", field=format_loc(("rotations", i, "contacts", j)))
            for i, r in enumerate(schedule.rotations)
            for j, c in enumerate(r.contacts)
            if c not in contacts
        ]
        people = _people(self._current_docs(session, SCHEDULES) | {schedule.name: schedule}, self._covers(session, now))
        problems += [
            Problem(f"{msg}, in ladder {name!r}", field=format_loc(loc))
            for name, ladder in self._current_docs(session, LADDERS).items()
            if schedule.name in ladder.schedule_ids()
            for loc, msg in reference_problems(ladder, contacts, people)
        ]
        if problems:
            raise InvalidInput(problems)

    @staticmethod
    def _write(
        session: Session,
        kind: _Kind[D],
        name: str,
        definition: D | None,
        actor: str,
        now: datetime,
        source: str | None,
        comment: str | None,
        prefix: str = "",
    ) -> tuple[str, int]:
        """Append a version if the content differs from the current one; returns (outcome, version)."""
        if definition is not None:  # whatever the caller built, only a valid document is ever stored
            definition = kind.build(definition.to_document())
        head = session.get(kind.head, name)
        previous: D | None = None
        if head is not None and head.deleted_at is None:
            previous = kind.parse(session.get(kind.rows, (name, head.version)).snapshot)
            if definition is not None and previous == definition:
                return "unchanged", head.version
        if head is None:
            head = kind.head(name=name, version=0, updated_at=now, updated_by=actor)
            session.add(head)
            session.flush()
        outcome = "created" if previous is None else ("deleted" if definition is None else "updated")
        change = prefix + kind.describe(previous, definition)
        if source:
            change = f"{change} ({source})"
        head.version += 1
        head.deleted_at = now if definition is None else None
        head.updated_at, head.updated_by = now, actor
        session.add(
            kind.rows(
                **{kind.key: name},
                version=head.version,
                snapshot=None if definition is None else definition.to_document(),
                actor=actor,
                created_at=now,
                change=change,
                comment=comment,
            )
        )
        session.flush()
        return outcome, head.version

    @staticmethod
    def _write_contact(
        session: Session, contact: Contact, actor: str, now: datetime, source: str | None, comment: str | None
    ) -> tuple[str, int]:
        contact = build_contact(contact.to_document())  # only a valid contact is ever stored
        row = session.get(ContactRow, contact.id)
        if row is not None and row.removed_at is None and _contact_from_row(row) == contact:
            return "unchanged", row.version
        outcome = "created" if row is None or row.removed_at is not None else "updated"
        if row is None:
            row = ContactRow(id=contact.id, name=contact.name, version=0, updated_at=now, updated_by=actor)
            session.add(row)
        changed = [] if outcome == "created" else _contact_changes(_contact_from_row(row), contact)
        row.name, row.phone, row.push_tokens = contact.name, contact.phone, list(contact.push_tokens)
        row.version += 1
        row.removed_at = None
        row.updated_at, row.updated_by = now, actor
        session.flush()
        change = outcome if outcome == "created" else "updated " + ", ".join(changed)
        if source:
            change = f"{change} ({source})"
        session.add(
            ContactVersionRow(
                contact_id=contact.id, version=row.version, snapshot=contact.to_document(), actor=actor,
                created_at=now, change=change, comment=comment,
            )
        )
        session.flush()
        return outcome, row.version


def _people(schedules: Mapping[str, ScheduleDoc], covers: Mapping[str, set[str]] | None = None) -> dict[str, set[str]]:
    """schedule id → the contacts its rotations name, and those covering it by an override now or
    later (what a ladder's references are checked against: each of them may be paged on its legs)."""
    covers = covers or {}
    return {name: schedule.contact_ids() | covers.get(name, set()) for name, schedule in schedules.items()}


def _contact_changes(old: Contact, new: Contact) -> list[str]:
    return [f for f in ("name", "phone", "push_tokens") if getattr(old, f) != getattr(new, f)] or ["nothing"]
