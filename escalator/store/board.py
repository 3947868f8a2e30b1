"""What `escalator watch` shows (SPEC §12), read from the database so it works beside any replica:
the open incidents with their current leg's pages, and the last closed ones. Four indexed queries a
redraw, whatever the number of incidents (the open ones are capped at OPEN_LIMIT, and counted)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from escalator import walk as walk_
from escalator.store.db import read_session
from escalator.store.tables import IncidentEventRow, IncidentRow, PageRow

OPEN_LIMIT = 30
CLOSED_LIMIT = 10

_I, _P, _E = IncidentRow.__table__, PageRow.__table__, IncidentEventRow.__table__


@dataclass(frozen=True)
class PageView:
    contact: str
    channel: str
    status: str  # pending, sent, failed, abandoned (the page's row)
    delivery: str | None  # what the provider last said (ringing, answered, voicemail, delivered …)
    reason: str | None

    @property
    def shown(self) -> str:
        if self.status == walk_.PAGE_FAILED:
            return f"failed: {self.reason}" if self.reason else "failed"
        if self.delivery:
            return self.delivery
        return {walk_.PAGE_PENDING: "sending", walk_.PAGE_SENT: "sent"}.get(self.status, self.status)


@dataclass(frozen=True)
class OpenView:
    id: str
    summary: str
    ladder: str
    status: str  # open or exhausted
    leg: str
    cycle: int
    deadline: datetime | None
    opened_at: datetime
    pages: tuple[PageView, ...] = ()


@dataclass(frozen=True)
class ClosedView:
    id: str
    summary: str
    ladder: str
    status: str  # acknowledged or resolved
    by: str | None  # who took it (or resolved it)
    channel: str | None  # how they took it
    took_s: float | None  # from opening to acknowledgement
    closed_at: datetime


@dataclass
class Board:
    at: datetime
    ladder: str | None
    open_count: int = 0
    open: list[OpenView] = field(default_factory=list)
    closed: list[ClosedView] = field(default_factory=list)


def snapshot(engine: Engine, now: datetime, ladder: str | None = None) -> Board:
    board = Board(now, ladder)
    scope = [_I.c.ladder == ladder] if ladder else []
    active = _I.c.status.in_(list(walk_.ACTIVE))
    with read_session(engine) as session:
        board.open_count = session.scalar(sa.select(sa.func.count()).select_from(_I).where(active, *scope)) or 0
        rows = session.execute(
            sa.select(_I.c.id, _I.c.summary, _I.c.ladder, _I.c.status, _I.c.plan, _I.c.state, _I.c.deadline, _I.c.opened_at)
            .where(active, *scope).order_by(_I.c.opened_at, _I.c.id).limit(OPEN_LIMIT)
        ).all()
        pages: dict[str, list[PageView]] = {}
        if rows:
            # the current leg's pages (all of the exhaustion's): its cycle and leg, from the walk's state
            cycle, leg_index = _I.c.state["cycle"].as_integer(), _I.c.state["leg_index"].as_integer()
            found = session.execute(
                sa.select(_P.c.incident_id, _P.c.contact, _P.c.channel, _P.c.status, _P.c.delivery, _P.c.reason)
                .select_from(_P.join(_I, _I.c.id == _P.c.incident_id))
                .where(_P.c.incident_id.in_([r.id for r in rows]), _P.c.cycle == cycle,
                       sa.or_(_P.c.leg_index == leg_index, _I.c.status == walk_.EXHAUSTED))
                .order_by(_P.c.incident_id, _P.c.created_at, _P.c.key)
            ).all()
            # each person in the order they were paged, their channels as a leg names them: voice, sms, push
            order = {ch: i for i, ch in enumerate(walk_.CHANNELS)}
            for incident_id, contact, channel, status, delivery, reason in found:
                pages.setdefault(incident_id, []).append(PageView(contact, channel, status, delivery, reason))
            for views in pages.values():
                first = {}
                for v in views:
                    first.setdefault(v.contact, len(first))
                views.sort(key=lambda v: (first[v.contact], order.get(v.channel, 9)))
        for r in rows:
            state, legs = r.state or {}, (r.plan or {}).get("legs", [])
            index = int(state.get("leg_index", 0))
            leg = legs[index]["name"] if r.status == walk_.OPEN and index < len(legs) else "everyone"
            board.open.append(OpenView(r.id, r.summary, r.ladder, r.status, leg, int(state.get("cycle", 1)), r.deadline,
                                       r.opened_at, tuple(pages.get(r.id, ()))))
        closed = session.execute(
            sa.select(_I.c.id, _I.c.summary, _I.c.ladder, _I.c.status, _I.c.acked_by, _I.c.opened_at, _I.c.closed_at)
            .where(_I.c.closed_at.is_not(None), *scope).order_by(_I.c.closed_at.desc(), _I.c.id).limit(CLOSED_LIMIT)
        ).all()
        taken: dict[str, tuple[datetime, dict[str, Any]]] = {}
        if closed:
            for incident_id, at, data in session.execute(
                sa.select(_E.c.incident_id, _E.c.at, _E.c.data)
                .where(_E.c.incident_id.in_([c.id for c in closed]), _E.c.event == "acknowledged").order_by(_E.c.incident_id, _E.c.seq)
            ):
                taken[incident_id] = (at, data or {})  # the last acknowledgement (after an expired one, the new one)
        for c in closed:
            ack = taken.get(c.id)
            by = c.acked_by or (ack[1].get("by") if ack else None)
            board.closed.append(ClosedView(
                c.id, c.summary, c.ladder, c.status, by, ack[1].get("channel") if ack else None,
                (ack[0] - c.opened_at).total_seconds() if ack else None, c.closed_at,
            ))
    return board
