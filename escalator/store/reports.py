"""`escalator report` (SPEC §12): how the incidents opened in a period went, computed in SQL on
SQLite and PostgreSQL alike — a few grouped queries, never every event loaded into Python.

Percentiles are nearest-rank (the smallest time with at least p % of the values at or below it),
from window functions both databases have: ROW_NUMBER() and COUNT() over the group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from escalator.store.db import read_session
from escalator.store.tables import IncidentEventRow, IncidentRow, PageRow

TOP = 10  # rows of each ranking

_I, _E, _P = IncidentRow.__table__, IncidentEventRow.__table__, PageRow.__table__


@dataclass(frozen=True)
class Spread:
    """Time to acknowledge of a group of incidents, in seconds."""

    n: int
    p50_s: float
    p90_s: float
    max_s: float


@dataclass
class Report:
    since: datetime
    until: datetime
    ladder: str | None
    incidents: dict[str, int] = field(default_factory=dict)  # opened, acknowledged, resolved, exhausted, reopened
    acknowledged_by_channel: dict[str, int] = field(default_factory=dict)
    tta_overall: Spread | None = None
    tta_by_ladder: dict[str, Spread] = field(default_factory=dict)
    tta_by_contact: dict[str, Spread] = field(default_factory=dict)
    pages: list[dict[str, Any]] = field(default_factory=list)  # channel, outcome, count
    unreachable_legs: list[dict[str, Any]] = field(default_factory=list)  # ladder, leg, reason, count
    unanswered: list[dict[str, Any]] = field(default_factory=list)  # contact, paged, acknowledged
    failure_reasons: list[dict[str, Any]] = field(default_factory=list)  # reason, count


def _seconds(later: Any, earlier: Any, dialect: str) -> Any:
    """`later - earlier` in seconds, as each database spells it."""
    if dialect == "postgresql":
        return sa.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


def build(engine: Engine, since: datetime, until: datetime, ladder: str | None = None) -> Report:
    report = Report(since, until, ladder)
    dialect = engine.dialect.name
    window = [_I.c.opened_at >= since, _I.c.opened_at < until] + ([_I.c.ladder == ladder] if ladder else [])
    joined = _E.join(_I, _I.c.id == _E.c.incident_id)
    data = _E.c.data
    with read_session(engine) as session:
        opened = session.scalar(sa.select(sa.func.count()).select_from(_I).where(*window)) or 0
        counted = dict(session.execute(
            sa.select(_E.c.event, sa.func.count(sa.distinct(_E.c.incident_id))).select_from(joined)
            .where(*window, _E.c.event.in_(["acknowledged", "resolved", "exhausted", "ack_expired"])).group_by(_E.c.event)
        ).all())
        report.incidents = {
            "opened": opened, "acknowledged": counted.get("acknowledged", 0), "resolved": counted.get("resolved", 0),
            "exhausted": counted.get("exhausted", 0), "reopened": counted.get("ack_expired", 0),
        }
        channel = sa.func.coalesce(data["channel"].as_string(), "operator")
        report.acknowledged_by_channel = dict(session.execute(
            sa.select(channel, sa.func.count()).select_from(joined).where(*window, _E.c.event == "acknowledged").group_by(channel)
        ).all())

        # the first acknowledgement of each incident: how long after its opening, and by whom
        earlier = _E.alias("earlier")
        first_seq = (
            sa.select(sa.func.min(earlier.c.seq)).where(earlier.c.incident_id == _I.c.id, earlier.c.event == "acknowledged")
            .scalar_subquery()
        )
        tta = (
            sa.select(
                _I.c.ladder.label("ladder"),
                sa.func.coalesce(data["contact"].as_string(), data["by"].as_string()).label("who"),
                _seconds(_E.c.at, _I.c.opened_at, dialect).label("secs"),
            )
            .select_from(joined).where(*window, _E.c.seq == first_seq)
            .cte("tta")
        )
        for group, target in ((sa.literal(""), "overall"), (tta.c.ladder, "ladder"), (tta.c.who, "contact")):
            spreads = _spreads(session, tta, group)
            if target == "overall":
                report.tta_overall = spreads.get("")
            elif target == "ladder":
                report.tta_by_ladder = spreads
            else:
                report.tta_by_contact = spreads

        pages = _P.join(_I, _I.c.id == _P.c.incident_id)
        report.pages = [
            {"channel": ch, "outcome": status, "count": n}
            for ch, status, n in session.execute(
                sa.select(_P.c.channel, _P.c.status, sa.func.count()).select_from(pages).where(*window)
                .group_by(_P.c.channel, _P.c.status).order_by(_P.c.channel, _P.c.status)
            )
        ]
        reason, leg = data["reason"].as_string(), data["leg"].as_string()
        report.unreachable_legs = [
            {"ladder": lad, "leg": lg, "reason": why, "count": n}
            for lad, lg, why, n in session.execute(
                sa.select(_I.c.ladder, leg, reason, sa.func.count()).select_from(joined)
                .where(*window, _E.c.event == "passed", sa.or_(reason.like("unreachable%"), reason == "nobody on call"))
                .group_by(_I.c.ladder, leg, reason).order_by(sa.func.count().desc(), _I.c.ladder, leg).limit(TOP)
            )
        ]
        acks = (
            sa.select(_E.c.incident_id, data["contact"].as_string().label("contact")).select_from(joined)
            .where(*window, _E.c.event == "acknowledged").subquery()
        )
        paged = sa.func.count(sa.distinct(_P.c.incident_id))
        acked = sa.func.count(sa.distinct(acks.c.incident_id))
        report.unanswered = [
            {"contact": who, "paged": p, "acknowledged": a}
            for who, p, a in session.execute(
                sa.select(_P.c.contact, paged, acked)
                .select_from(pages.outerjoin(acks, sa.and_(acks.c.incident_id == _P.c.incident_id, acks.c.contact == _P.c.contact)))
                .where(*window).group_by(_P.c.contact).order_by((paged - acked).desc(), _P.c.contact).limit(TOP)
            )
            if p > a
        ]
        report.failure_reasons = [
            {"reason": why, "count": n}
            for why, n in session.execute(
                sa.select(_P.c.reason, sa.func.count()).select_from(pages).where(*window, _P.c.status == "failed")
                .group_by(_P.c.reason).order_by(sa.func.count().desc(), _P.c.reason).limit(TOP)
            )
        ]
    return report


def _spreads(session: Any, tta: Any, group: Any) -> dict[str, Spread]:
    """Nearest-rank p50 and p90, and the maximum, of each group's times."""
    ranked = sa.select(
        group.label("grp"), tta.c.secs,
        sa.func.row_number().over(partition_by=group, order_by=tta.c.secs).label("rn"),
        sa.func.count().over(partition_by=group).label("n"),
    ).subquery()

    def rank(p: int) -> Any:
        return sa.func.min(sa.case((ranked.c.rn * 100 >= ranked.c.n * p, ranked.c.secs)))

    rows = session.execute(
        sa.select(ranked.c.grp, sa.func.max(ranked.c.n), rank(50), rank(90), sa.func.max(ranked.c.secs)).group_by(ranked.c.grp)
    )
    # to the millisecond: SQLite's julianday() arithmetic carries float noise below that
    return {str(g or ""): Spread(int(n), round(float(p50), 3), round(float(p90), 3), round(float(mx), 3)) for g, n, p50, p90, mx in rows}
