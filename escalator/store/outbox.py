"""The outbox table: events committed with their step, waiting to be published (escalator.outbox).

Several replicas share it, and each event is published once (SPEC §3): a replica *claims* rows
before publishing them and deletes them after, in one transaction that holds the rows' locks
meanwhile (PostgreSQL `FOR UPDATE SKIP LOCKED`: other replicas pass over them). A replica that dies
mid-batch loses its connection, PostgreSQL rolls its transaction back, and the rows it held are
claimed again by another: only what was in flight can repeat.

One incident's events must still leave in `seq` order. A claim keeps, per incident, only the run of
its oldest waiting rows: if an earlier row of that incident is held by another replica (or is
locked for a moment by one that will pass it over), the incident's rows are left for a later round.

SQLite has one replica (a file lock guarantees it), so there a claim is a plain read, and no write
transaction is held while publishing (it would stop every step meanwhile).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from escalator.store.db import read_session, write_session
from escalator.store.tables import OutboxRow

_OUTBOX = OutboxRow.__table__
IDLE_LIMIT_S = 30
_COLUMNS = (_OUTBOX.c.id, _OUTBOX.c.incident_id, _OUTBOX.c.subject, _OUTBOX.c.msg_id, _OUTBOX.c.payload)


@dataclass(frozen=True)
class Event:
    id: int
    incident_id: str | None
    subject: str
    msg_id: str
    payload: dict[str, Any]


@dataclass
class Claim:
    """Rows this replica may publish now, in order. `finish` deletes those published and lets go of
    the rest (they are claimed again in a later round)."""

    events: list[Event]
    _engine: Engine
    _session: Session | None = None  # PostgreSQL: the transaction holding the rows' locks
    _context: Any = field(default=None, repr=False)

    def finish(self, published: Iterable[int]) -> None:
        ids = list(published)
        if self._session is None:
            if ids:
                with write_session(self._engine) as session:
                    session.execute(sa.delete(_OUTBOX).where(_OUTBOX.c.id.in_(ids)))
            return
        try:
            if ids:
                self._session.execute(sa.delete(_OUTBOX).where(_OUTBOX.c.id.in_(ids)))
        except BaseException:
            self._context.__exit__(*sys.exc_info())
            raise
        self._context.__exit__(None, None, None)  # commits: deleted rows gone, the others unlocked

    def abandon(self) -> None:
        if self._session is not None:
            self._context.__exit__(RuntimeError, RuntimeError("abandoned"), None)


class Outbox:
    def __init__(self, engine: Engine):
        self.engine = engine

    def count(self) -> int:
        """Events committed but not yet published (the backlog gauge)."""
        with read_session(self.engine) as session:
            return session.scalar(sa.select(sa.func.count()).select_from(_OUTBOX)) or 0

    def waiting(self, limit: int = 500) -> list[Event]:
        """Rows not yet published, oldest first (a read: for gauges and tests)."""
        with read_session(self.engine) as session:
            return [Event(*row) for row in session.execute(sa.select(*_COLUMNS).order_by(_OUTBOX.c.id).limit(limit))]

    def claim(self, limit: int = 500) -> Claim:
        if self.engine.dialect.name != "postgresql":
            return Claim(self.waiting(limit), self.engine)
        context = write_session(self.engine)
        session = context.__enter__()
        try:
            # A replica that freezes while holding a claim must not hold the rows (and every later
            # event of their incidents) for long: PostgreSQL ends a transaction left idle this long.
            session.execute(sa.text(f"SET LOCAL idle_in_transaction_session_timeout = '{IDLE_LIMIT_S}s'"))
            rows = [Event(*row) for row in session.execute(
                sa.select(*_COLUMNS).order_by(_OUTBOX.c.id).limit(limit).with_for_update(skip_locked=True)
            )]
            events = self._in_order(session, rows)
        except BaseException:
            context.__exit__(*sys.exc_info())
            raise
        return Claim(events, self.engine, session, context)

    @staticmethod
    def _in_order(session: Session, rows: list[Event]) -> list[Event]:
        """Of the rows locked here, those that may go now: per incident, the unbroken run from its
        oldest waiting row (any row, locked here or elsewhere). Rows without an incident go as they are."""
        incidents = sorted({r.incident_id for r in rows if r.incident_id is not None})
        if not incidents:
            return rows
        mine = {r.id for r in rows}
        newest = max(mine)
        allowed: set[int] = set()
        for start in range(0, len(incidents), 500):
            chunk = incidents[start : start + 500]
            stopped: set[str] = set()
            for row_id, incident_id in session.execute(
                sa.select(_OUTBOX.c.id, _OUTBOX.c.incident_id)
                .where(_OUTBOX.c.incident_id.in_(chunk), _OUTBOX.c.id <= newest).order_by(_OUTBOX.c.id)
            ):
                if incident_id in stopped:
                    continue
                if row_id in mine:
                    allowed.add(row_id)
                else:  # an earlier row of this incident is someone else's: its run stops here
                    stopped.add(incident_id)
        return [r for r in rows if r.incident_id is None or r.id in allowed]
