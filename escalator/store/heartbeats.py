"""Publishers known from their heartbeats (SPEC §11), in the database: the last heartbeat of each
source is here, not only in a replica's memory, so a daemon restarted during a silence still sees
it, and every replica computes the same incident id for it."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from escalator.store.db import read_session, write_session
from escalator.store.tables import HeartbeatRow, IncidentRow
from escalator.walk import RESOLVED
from escalator.store.tx import Tx

MAX_SOURCES = 1000  # known sources at most: a publisher inventing a source per message cannot grow this without end

_HEARTBEATS = HeartbeatRow.__table__
_CLAIM = (
    sa.update(_HEARTBEATS)
    .where(_HEARTBEATS.c.source == sa.bindparam("s"), _HEARTBEATS.c.incident_id.is_(None), _HEARTBEATS.c.last_at == sa.bindparam("last"))
    .values(incident_id=sa.bindparam("incident"))
)


class TooManySources(Exception):
    pass


class SilenceOpen(Exception):
    """The source's silence has this incident open."""


def known(engine: Engine) -> list[HeartbeatRow]:
    with read_session(engine) as session:
        return list(session.scalars(sa.select(HeartbeatRow).order_by(HeartbeatRow.source)))


def get(engine: Engine, source: str) -> HeartbeatRow | None:
    with read_session(engine) as session:
        return session.get(HeartbeatRow, source)


def record(engine: Engine, source: str, interval_s: int, now: datetime) -> str | None:
    """A heartbeat: the source is known (from its first), its interval is the latest it gave, and
    its silence, if it had one, is over: returns the incident that silence opened, to be resolved.
    Raises TooManySources for a new source beyond MAX_SOURCES."""
    with write_session(engine) as session:
        row = session.get(HeartbeatRow, source, with_for_update=True)
        if row is None:
            if (session.scalar(sa.select(sa.func.count()).select_from(HeartbeatRow)) or 0) >= MAX_SOURCES:
                raise TooManySources(source)
            session.add(HeartbeatRow(source=source, interval_s=interval_s, first_at=now, last_at=now))
            return None
        silence = row.incident_id
        if silence is not None and int(now.timestamp()) <= int(row.last_at.timestamp()):
            # The next silence's incident is named by the second of this heartbeat: it must not be
            # the second that named the one ending now, or the next silence would find it taken.
            now = row.last_at.replace(microsecond=0) + timedelta(seconds=1)
        row.interval_s, row.incident_id = interval_s, None
        row.last_at = max(row.last_at, now)  # a redelivered old heartbeat never moves it back
        return silence


def claim_silence(tx: Tx, source: str, last_at: datetime, incident_id: str) -> bool:
    """In the transaction that opens the silence's incident: only the first replica to see this
    silence opens it (the row changes once; the others find it taken and open nothing)."""
    return bool(tx.execute(_CLAIM, {"s": source, "last": last_at, "incident": incident_id}).rowcount)


def forget(engine: Engine, source: str) -> bool:
    """Retire a source. Refused (SilenceOpen) while its silence's incident is open: forgotten, the
    source's next heartbeat could no longer resolve it."""
    with write_session(engine) as session:
        row = session.get(HeartbeatRow, source, with_for_update=True)
        if row is None:
            return False
        if row.incident_id is not None:
            status = session.scalar(sa.select(IncidentRow.status).where(IncidentRow.id == row.incident_id))
            if status is not None and status != RESOLVED:
                raise SilenceOpen(row.incident_id)
        session.delete(row)
        return True


def silences_open(engine: Engine) -> int:
    """Sources whose silence has an incident that nobody has resolved (the metric an alert watches)."""
    with read_session(engine) as session:
        return session.scalar(
            sa.select(sa.func.count()).select_from(HeartbeatRow)
            .join(IncidentRow, IncidentRow.id == HeartbeatRow.incident_id).where(IncidentRow.status != RESOLVED)
        ) or 0
