"""Who is on call, as the step path reads it: the schedules and overrides a plan names, read once
per transaction (a group commit starts many legs on the same schedules) in one query whatever the
number of people, and each schedule version parsed once per process (versions never change)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa

from escalator import oncall
from escalator.schedules import ScheduleDoc
from escalator.store.tables import OverrideRow, ScheduleRow, ScheduleVersionRow
from escalator.store.tx import Tx

Roster = tuple[oncall.Schedule, tuple[oncall.Override, ...]]

_HEADS, _VERSIONS, _OVERRIDES_T = ScheduleRow.__table__, ScheduleVersionRow.__table__, OverrideRow.__table__
# One round trip: each schedule's current version with its overrides not yet over (NULLs: none).
_READ = (
    sa.select(_HEADS.c.name, _HEADS.c.version, _HEADS.c.deleted_at, _OVERRIDES_T.c.id, _OVERRIDES_T.c.by,
              _OVERRIDES_T.c.instead_of, _OVERRIDES_T.c.add, _OVERRIDES_T.c.start, _OVERRIDES_T.c.until)
    .select_from(_HEADS.outerjoin(_OVERRIDES_T, sa.and_(
        _OVERRIDES_T.c.schedule == _HEADS.c.name, _OVERRIDES_T.c.removed_at.is_(None), _OVERRIDES_T.c.until > sa.bindparam("now"),
    )))
    .where(_HEADS.c.name.in_(sa.bindparam("names", expanding=True)))
    .order_by(_HEADS.c.name, _OVERRIDES_T.c.id)
)
_SNAPSHOT = sa.select(_VERSIONS.c.snapshot).where(
    _VERSIONS.c.schedule == sa.bindparam("name"), _VERSIONS.c.version == sa.bindparam("version")
)


class Rosters:
    def __init__(self) -> None:
        self._plans: dict[tuple[str, int], oncall.Schedule] = {}

    def read(self, tx: Tx, names: Iterable[str], now: datetime) -> dict[str, Roster]:
        """name → (schedule, overrides not over by `now`, in creation order). A schedule deleted since
        a pinned ladder named it is absent: nobody is on call there."""
        wanted = sorted(set(names) - tx.rosters.keys())
        if wanted:
            found: dict[str, Roster | None] = dict.fromkeys(wanted)
            heads: dict[str, int] = {}
            overrides: dict[str, list[oncall.Override]] = {name: [] for name in wanted}
            for r in tx.read(_READ, {"names": wanted, "now": now}):
                if r.deleted_at is None:
                    heads[r.name] = r.version
                if r.id is not None:
                    overrides[r.name].append(oncall.Override(str(r.id), r.by, r.start, r.until, r.instead_of, bool(r.add)))
            for name, version in heads.items():
                found[name] = (self._plan(tx, name, version), tuple(overrides[name]))
            tx.rosters.update(found)
        return {name: roster for name in names if (roster := tx.rosters.get(name)) is not None}

    def _plan(self, tx: Tx, name: str, version: int) -> oncall.Schedule:
        plan = self._plans.get((name, version))
        if plan is None:
            snapshot = tx.read(_SNAPSHOT, {"name": name, "version": version}).scalar_one()
            plan = self._plans[(name, version)] = ScheduleDoc.model_validate(snapshot).plan()
        return plan
