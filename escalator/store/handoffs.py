"""Hand-over notices in the database: each one claimed once across every replica (SPEC §10)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from escalator.store.db import read_session, write_session
from escalator.store.tables import HandoffNoticeRow

CLAIMED, SENT, FAILED, SKIPPED = "claimed", "sent", "failed", "skipped"
_T = HandoffNoticeRow.__table__


def notice_key(schedule: str, contact: str, starts_at: datetime) -> str:
    """One hand-over: this person coming on call on this schedule at this instant."""
    return f"{schedule}:{contact}:{starts_at.timestamp():.0f}"


class Handoffs:
    def __init__(self, engine: Engine, replica: str):
        self.engine = engine
        self.replica = replica

    def claim(self, schedule: str, contact: str, starts_at: datetime, until: datetime, now: datetime) -> bool:
        """True for the one replica (and the one scan) that gets to send this notice."""
        insert = (pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert)(_T)
        statement = insert.values(
            key=notice_key(schedule, contact, starts_at), schedule=schedule, contact=contact, starts_at=starts_at,
            until=until, claimed_by=self.replica, claimed_at=now, status=CLAIMED,
        ).on_conflict_do_nothing(index_elements=["key"]).returning(_T.c.key)
        with write_session(self.engine) as session:
            return session.execute(statement).first() is not None

    def finish(self, schedule: str, contact: str, starts_at: datetime, status: str, channel: str | None, reason: str | None) -> None:
        with write_session(self.engine) as session:
            session.execute(
                sa.update(_T).where(_T.c.key == notice_key(schedule, contact, starts_at))
                .values(status=status, channel=channel, reason=reason)
            )

    def recent(self, since: datetime) -> list[HandoffNoticeRow]:
        with read_session(self.engine) as session:
            return list(session.scalars(
                sa.select(HandoffNoticeRow).where(HandoffNoticeRow.starts_at >= since).order_by(HandoffNoticeRow.starts_at)
            ))
