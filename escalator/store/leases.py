"""Which replica drives which open incident's window, and for how long it may.

Each running replica has one row in `replicas` whose `lease_until` it renews every third of the
lease; that one row is the lease on every incident whose `owner` it is. Renewing is one row
whatever the number of open incidents, and never locks an incident a step is working on.

An active incident (or an acknowledged one whose acknowledgement expires, SPEC §11) is free to claim when it has no owner or its owner's lease has run out (the
replica died, or stalled longer than a lease). The replica that runs a step arming a window takes
ownership in that same step (escalator.store.incidents), so ingest spreads incidents across
replicas and a hand-over needs no coordination. Ownership only decides who keeps the timer: the row
lock and the walk's own checks (a stale window is ignored) make a double-fired window harmless, so
a replica that stalls past its lease cannot escalate twice.

Clocks: leases use the replicas' clocks, as every window deadline does; replicas must agree to
within a fraction of a second (NTP), as Kubernetes nodes do.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from escalator import walk as walk_
from escalator.store.db import read_session, write_session
from escalator.store.tables import IncidentRow, ReplicaRow

FORGET_AFTER = timedelta(days=1)  # a dead replica's row, once nothing refers to it


def _active() -> sa.ColumnElement[bool]:
    """`status IN ('open', 'exhausted')` with the values written into the SQL, as the condition of the
    partial index ix_incidents_active_owner is. With bound parameters a planner cannot prove that
    index applies: SQLite then read every active incident for each claim, owned or not, which made
    the claims of a 100,000-incident restart quadratic (40 ms a round at the end)."""
    return IncidentRow.status.in_(sa.bindparam("active", list(walk_.ACTIVE), expanding=True, literal_execute=True))


def _timed() -> sa.ColumnElement[bool]:
    """An acknowledged incident whose acknowledgement expires (SPEC §11) still has a timer to drive:
    `status = 'acknowledged' AND deadline IS NOT NULL`, with the status written into the SQL so the
    planner reads just those through ix_incidents_status_deadline (never every acknowledged one)."""
    return sa.and_(
        IncidentRow.status == sa.bindparam("acknowledged", walk_.ACKNOWLEDGED, literal_execute=True), IncidentRow.deadline.is_not(None)
    )


DRIVEN = (_active, _timed)  # the incidents a replica drives: each with its own partial index


class Leases:
    def __init__(self, engine: Engine, replica: str, ttl_s: float):
        self.engine = engine
        self.replica = replica
        self.ttl = timedelta(seconds=ttl_s)

    def renew(self, now: datetime) -> None:
        """Extend this replica's lease (and so its hold on all its incidents): one row."""
        with write_session(self.engine) as session:
            row = session.get(ReplicaRow, self.replica)
            if row is None:
                session.add(ReplicaRow(id=self.replica, started_at=now, lease_until=now + self.ttl))
            else:
                row.lease_until = now + self.ttl
            session.execute(
                sa.delete(ReplicaRow).where(
                    ReplicaRow.lease_until < now - FORGET_AFTER,
                    ~sa.exists().where(IncidentRow.owner == ReplicaRow.id),
                )
            )

    def claim(self, now: datetime, limit: int = 500, thorough: bool = False) -> list[str]:
        """Take up to `limit` active incidents nobody alive drives: unowned, or owned by a replica whose
        lease ran out. `thorough` also takes those whose owner never registered a lease (kept rare: it
        reads every active incident).

        FOR UPDATE SKIP LOCKED: replicas claiming at once split the free incidents between them, and
        an incident in the middle of a step is simply left for the next round.
        """
        with write_session(self.engine) as session:
            if thorough:
                alive = sa.select(ReplicaRow.id).where(ReplicaRow.lease_until >= now)
                gone = sa.and_(IncidentRow.owner.not_in(alive), IncidentRow.owner != self.replica)
            else:  # the replicas table is tiny: name the dead ones, then use the owner index
                dead = list(session.scalars(sa.select(ReplicaRow.id).where(ReplicaRow.lease_until < now, ReplicaRow.id != self.replica)))
                gone = IncidentRow.owner.in_(dead) if dead else None
            # Unowned first, then the dead's: two index reads (`owner IS NULL OR owner IN (…)` in one
            # makes SQLite read every active incident instead).
            ids: list[str] = []
            for driven in DRIVEN:
                for whose in (IncidentRow.owner.is_(None), gone):
                    if whose is None or len(ids) >= limit:
                        continue
                    query = sa.select(IncidentRow.id).where(driven(), whose).limit(limit - len(ids)).with_for_update(skip_locked=True)
                    ids += session.scalars(query)
            if ids:
                session.execute(sa.update(IncidentRow).where(IncidentRow.id.in_(ids)).values(owner=self.replica))
            return ids

    def kept(self) -> set[str]:
        """The driven incidents in this replica's name (index reads: no locks)."""
        with read_session(self.engine) as session:
            return {i for driven in DRIVEN for i in session.scalars(sa.select(IncidentRow.id).where(IncidentRow.owner == self.replica, driven()))}

    def release(self) -> int:
        """On shutdown: everything we drive becomes claimable at once by the other replicas."""
        with write_session(self.engine) as session:
            result = session.execute(sa.update(IncidentRow).where(IncidentRow.owner == self.replica).values(owner=None))
            session.execute(sa.delete(ReplicaRow).where(ReplicaRow.id == self.replica))
            return result.rowcount or 0

    def expire_all(self) -> int:
        """Single replica (SQLite, guarded by a file lock): whoever held a lease is dead; free them all."""
        with write_session(self.engine) as session:
            result = session.execute(sa.update(IncidentRow).where(IncidentRow.owner.is_not(None)).values(owner=None))
            session.execute(sa.delete(ReplicaRow))
            return result.rowcount or 0

    def owners(self, incident_ids: Iterable[str] | None = None) -> dict[str, str | None]:
        """incident → owner, of driven incidents (for tests and operators)."""
        out: dict[str, str | None] = {}
        with read_session(self.engine) as session:
            for driven in DRIVEN:
                query = sa.select(IncidentRow.id, IncidentRow.owner).where(driven())
                if incident_ids is not None:
                    query = query.where(IncidentRow.id.in_(list(incident_ids)))
                out.update({i: o for i, o in session.execute(query)})
        return out
