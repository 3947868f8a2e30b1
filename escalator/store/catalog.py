"""Ladders and contacts in the database: reads, and writes that always leave a new version.

Every write runs in one transaction that first takes the catalog lock (BEGIN IMMEDIATE on SQLite,
an advisory lock on PostgreSQL), re-reads what it changes and re-checks every rule against what
is committed now. So two operators editing at once never lose an update, and nothing invalid
or half-written is ever committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

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
)
from escalator.store.db import read_session, write_session
from escalator.store.tables import ContactRow, ContactVersionRow, LadderRow, LadderVersionRow


@dataclass(frozen=True)
class LadderVersion:
    """One immutable version of a ladder; `definition` is None for a deletion."""

    name: str
    version: int
    definition: Ladder | None
    actor: str
    created_at: datetime
    change: str
    comment: str | None

    @property
    def deleted(self) -> bool:
        return self.definition is None


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


def _contact_from_row(row: ContactRow) -> Contact:
    return Contact(id=row.id, name=row.name, phone=row.phone, push_tokens=tuple(row.push_tokens or ()))


def _version_from_row(row: LadderVersionRow) -> LadderVersion:
    return LadderVersion(
        name=row.ladder,
        version=row.version,
        definition=None if row.snapshot is None else Ladder.model_validate(row.snapshot),
        actor=row.actor,
        created_at=row.created_at,
        change=row.change,
        comment=row.comment,
    )


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
        with read_session(self.engine) as session:
            rows = session.scalars(
                sa.select(LadderVersionRow)
                .join(
                    LadderRow,
                    sa.and_(LadderRow.name == LadderVersionRow.ladder, LadderRow.version == LadderVersionRow.version),
                )
                .where(LadderRow.deleted_at.is_(None))
                .order_by(LadderRow.name)
            )
            return [_version_from_row(r) for r in rows]

    def ladder(self, name: str, version: int | None = None) -> LadderVersion:
        """A ladder's current version (refused if deleted), or any version of it by number."""
        with read_session(self.engine) as session:
            head = session.get(LadderRow, name)
            if head is None:
                raise _not_found("ladder", name)
            if version is None:
                if head.deleted_at is not None:
                    raise InvalidInput(
                        Problem(f"ladder {name!r} was deleted (see `escalator ladder history {name}`)", field="ladder")
                    )
                version = head.version
            row = session.get(LadderVersionRow, (name, version))
            if row is None:
                raise InvalidInput(Problem(f"ladder {name!r} has no version {version} (latest is {head.version})", field="--version"))
            return _version_from_row(row)

    def history(self, name: str) -> list[LadderVersion]:
        with read_session(self.engine) as session:
            rows = list(
                session.scalars(
                    sa.select(LadderVersionRow).where(LadderVersionRow.ladder == name).order_by(LadderVersionRow.version)
                )
            )
            if not rows:
                raise _not_found("ladder", name)
            return [_version_from_row(r) for r in rows]

    # -- apply ------------------------------------------------------------------------------------

    def apply(self, declared: Declarations, actor: str, now: datetime, comment: str | None = None) -> ApplyReport:
        """Write everything the files declare in one transaction, or nothing at all."""
        report = ApplyReport()
        with write_session(self.engine, catalog=True) as session:
            contacts = self._active_contacts(session)
            problems = check_references(declared, contacts)
            # Contacts changed by these files must still suit the stored ladders that use them.
            merged = {**contacts, **declared.contact_map()}
            declared_ladders = {lad.name for lad, _ in declared.ladders}
            origins = {c.id: o for c, o in declared.contacts}
            for name, ladder in self._current_ladders(session).items():
                if name in declared_ladders:
                    continue
                for loc, msg in reference_problems(ladder, merged):
                    contact_id = ladder.legs[loc[1]].contacts[loc[3]]
                    origin = origins.get(contact_id)
                    text = f"{msg}, in stored ladder {name!r}"
                    problems.append(origin.problem((), text) if origin else Problem(text))
            if problems:
                raise InvalidInput(problems)

            for contact, origin in declared.contacts:
                outcome, version = self._write_contact(session, contact, actor, now, f"applied from {origin.file}", comment)
                report.contacts.append({"id": contact.id, "outcome": outcome, "version": version})
            for ladder, origin in declared.ladders:
                outcome, version = self._write_ladder(session, ladder.name, ladder, actor, now, f"applied from {origin.file}", comment)
                report.ladders.append({"name": ladder.name, "outcome": outcome, "version": version})
        return report

    # -- ladder edits -----------------------------------------------------------------------------

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
            current = self._current(session, name)
            updated = edit(current)
            self._check_refs(updated, self._active_contacts(session))
            outcome, version = self._write_ladder(session, name, updated, actor, now, None, comment)
            if outcome == "unchanged":
                return None
            return _version_from_row(session.get(LadderVersionRow, (name, version)))

    def rollback(
        self, name: str, to_version: int | None, actor: str, now: datetime, comment: str | None = None
    ) -> LadderVersion | None:
        """A new version whose content is that of an earlier one (default: the one before the latest)."""
        with write_session(self.engine, catalog=True) as session:
            head = self._head(session, name)
            target_version = head.version - 1 if to_version is None else to_version
            if target_version < 1 or target_version > head.version:
                raise InvalidInput(
                    Problem(f"ladder {name!r} has versions 1 to {head.version}; cannot roll back to {target_version}", field="--to")
                )
            target = session.get(LadderVersionRow, (name, target_version))
            if target is None or target.snapshot is None:
                raise InvalidInput(Problem(f"version {target_version} of {name!r} is a deletion; pick another", field="--to"))
            definition = Ladder.model_validate(target.snapshot)
            self._check_refs(definition, self._active_contacts(session))
            outcome, version = self._write_ladder(
                session, name, definition, actor, now, None, comment, prefix=f"rollback to v{target_version}: "
            )
            if outcome == "unchanged":
                return None
            return _version_from_row(session.get(LadderVersionRow, (name, version)))

    def delete_ladder(
        self, name: str, actor: str, now: datetime, comment: str | None = None, protected: Iterable[str] = ()
    ) -> LadderVersion:
        with write_session(self.engine, catalog=True) as session:
            self._current(session, name)
            if name in set(protected):
                raise InvalidInput(
                    Problem(
                        f"{name!r} is ESCALATOR_DEFAULT_LADDER: incidents for unknown ladders walk it; "
                        "point the setting elsewhere first",
                        field="ladder",
                    )
                )
            _, version = self._write_ladder(session, name, None, actor, now, None, comment)
            return _version_from_row(session.get(LadderVersionRow, (name, version)))

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
            problems = [
                Problem(f"{msg}, in ladder {name!r}", field=format_loc(loc))
                for name, ladder in self._current_ladders(session).items()
                if contact_id in ladder.contact_ids()
                for loc, msg in reference_problems(ladder, contacts)
            ]
            if problems:
                raise InvalidInput(problems)
            return updated, self._write_contact(session, updated, actor, now, None, comment)[1]

    def remove_contact(self, contact_id: str, actor: str, now: datetime, comment: str | None = None) -> int:
        with write_session(self.engine, catalog=True) as session:
            row = session.get(ContactRow, contact_id)
            if row is None or row.removed_at is not None:
                raise _not_found("contact", contact_id)
            users = sorted(name for name, lad in self._current_ladders(session).items() if contact_id in lad.contact_ids())
            if users:
                raise InvalidInput(
                    Problem(
                        f"contact {contact_id!r} is on ladder {', '.join(users)}: take them off the ladder first",
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
    def _current_ladders(session: Session) -> dict[str, Ladder]:
        rows = session.scalars(
            sa.select(LadderVersionRow)
            .join(LadderRow, sa.and_(LadderRow.name == LadderVersionRow.ladder, LadderRow.version == LadderVersionRow.version))
            .where(LadderRow.deleted_at.is_(None))
        )
        return {r.ladder: Ladder.model_validate(r.snapshot) for r in rows}

    @staticmethod
    def _head(session: Session, name: str) -> LadderRow:
        head = session.get(LadderRow, name)
        if head is None:
            raise _not_found("ladder", name)
        return head

    def _current(self, session: Session, name: str) -> Ladder:
        head = self._head(session, name)
        if head.deleted_at is not None:
            raise InvalidInput(Problem(f"ladder {name!r} was deleted; `escalator ladder rollback {name}` restores it", field="ladder"))
        row = session.get(LadderVersionRow, (name, head.version))
        return Ladder.model_validate(row.snapshot)

    @staticmethod
    def _check_refs(ladder: Ladder, contacts: Mapping[str, Contact]) -> None:
        problems = [Problem(msg, field=format_loc(loc)) for loc, msg in reference_problems(ladder, contacts)]
        if problems:
            raise InvalidInput(problems)

    @staticmethod
    def _write_ladder(
        session: Session,
        name: str,
        definition: Ladder | None,
        actor: str,
        now: datetime,
        source: str | None,
        comment: str | None,
        prefix: str = "",
    ) -> tuple[str, int]:
        """Append a version if the content differs from the current one; returns (outcome, version)."""
        if definition is not None:  # whatever the caller built, only a valid ladder is ever stored
            definition = build_ladder(definition.to_document())
        head = session.get(LadderRow, name)
        previous: Ladder | None = None
        if head is not None and head.deleted_at is None:
            row = session.get(LadderVersionRow, (name, head.version))
            previous = Ladder.model_validate(row.snapshot)
            if definition is not None and previous == definition:
                return "unchanged", head.version
        if head is None:
            head = LadderRow(name=name, version=0, updated_at=now, updated_by=actor)
            session.add(head)
            session.flush()
        outcome = "created" if previous is None else ("deleted" if definition is None else "updated")
        change = prefix + describe_change(previous, definition)
        if source:
            change = f"{change} ({source})"
        head.version += 1
        head.deleted_at = now if definition is None else None
        head.updated_at, head.updated_by = now, actor
        session.add(
            LadderVersionRow(
                ladder=name,
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


def _contact_changes(old: Contact, new: Contact) -> list[str]:
    return [f for f in ("name", "phone", "push_tokens") if getattr(old, f) != getattr(new, f)] or ["nothing"]
