"""Incident leases: which replica drives which open incident's window.

A lease is two columns on `incidents` (owner, lease_until). Every active incident has a
lease_until; one in the past means nobody is driving it and any replica may claim it. The replica
that runs a step arming a window takes the lease in that same step (escalator.store.incidents), so
ingest spreads incidents across replicas and a hand-over needs no coordination. Leases only decide
who keeps the timer: the row lock and the walk's own checks (a stale window is ignored) make a
double-fired window harmless, so a replica that stalls past its lease cannot escalate twice.

Clocks: lease times come from the replica's clock, as every window deadline does; replicas must
agree to within a fraction of a second (NTP), which Kubernetes nodes do.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from escalator.store.db import read_session, write_session
from escalator.store.tables import IncidentRow

EPOCH_PAST = datetime(2000, 1, 1, tzinfo=UTC)  # "free to claim", for released leases


class Leases:
    def __init__(self, engine: Engine, replica: str, ttl_s: float):
        self.engine = engine
        self.replica = replica
        self.ttl = timedelta(seconds=ttl_s)

    def claim(self, now: datetime, limit: int = 500, own_too: bool = False) -> list[str]:
        """Take up to `limit` incidents whose lease has run out (and, at start, any still in our name).

        FOR UPDATE SKIP LOCKED: replicas claiming at once split the expired leases between them, and
        an incident in the middle of a step is simply left for the next round.
        """
        expired = IncidentRow.lease_until < now
        if own_too:
            expired = sa.or_(expired, sa.and_(IncidentRow.owner == self.replica, IncidentRow.lease_until.is_not(None)))
        with write_session(self.engine) as session:
            ids = list(
                session.scalars(
                    sa.select(IncidentRow.id).where(expired).order_by(IncidentRow.lease_until).limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            if ids:
                session.execute(
                    sa.update(IncidentRow).where(IncidentRow.id.in_(ids)).values(owner=self.replica, lease_until=now + self.ttl)
                )
            return ids

    def renew(self, now: datetime) -> set[str]:
        """Extend every lease we hold in one statement; returns the incidents we still drive."""
        with write_session(self.engine) as session:
            return set(
                session.scalars(
                    sa.update(IncidentRow)
                    .where(IncidentRow.owner == self.replica, IncidentRow.lease_until.is_not(None))
                    .values(lease_until=now + self.ttl)
                    .returning(IncidentRow.id)
                )
            )

    def release(self) -> int:
        """On shutdown: everything we drive becomes claimable at once by the other replicas."""
        with write_session(self.engine) as session:
            result = session.execute(
                sa.update(IncidentRow)
                .where(IncidentRow.owner == self.replica, IncidentRow.lease_until.is_not(None))
                .values(owner=None, lease_until=EPOCH_PAST)
            )
            return result.rowcount or 0

    def expire_all(self) -> int:
        """Single replica (SQLite, guarded by a file lock): whoever held a lease is dead; free them all."""
        with write_session(self.engine) as session:
            result = session.execute(
                sa.update(IncidentRow).where(IncidentRow.lease_until.is_not(None)).values(owner=None, lease_until=EPOCH_PAST)
            )
            return result.rowcount or 0

    def held(self) -> list[tuple[str, str | None, datetime | None]]:
        """(incident, owner, lease_until) of every active incident, for `escalator incident` and tests."""
        with read_session(self.engine) as session:
            rows = session.execute(
                sa.select(IncidentRow.id, IncidentRow.owner, IncidentRow.lease_until).where(IncidentRow.lease_until.is_not(None))
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]
