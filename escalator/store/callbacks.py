"""Twilio callbacks already acted on, shared by every replica (SPEC §5: a replayed callback changes
nothing; an inbound SMS is handled once per MessageSid, a key press once per call and prompt)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from escalator.store.db import write_session
from escalator.store.tables import HandledCallbackRow

# Only signed callbacks are recorded, so the table grows with Twilio's real traffic (a few rows an
# incident). A signature carries no time: a bare `ACK` replayed months later would still act, so
# keys are kept for a year.
KEEP = timedelta(days=366)
_TABLE = HandledCallbackRow.__table__
_FIRST = {
    name: insert(_TABLE).on_conflict_do_nothing(index_elements=["key"]).returning(_TABLE.c.key)
    for name, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


def _stored(key: str) -> str:
    """Keys fit the column whole: a long one (a 128-character incident id in it) by its digest."""
    return key if len(key) <= 200 else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class HandledCallbacks:
    def __init__(self, engine: Engine):
        self.engine = engine

    def first(self, key: str, now: datetime) -> bool:
        """Record `key`; True if it was not recorded before (act on it), False for a replay."""
        with write_session(self.engine) as session:
            inserted = session.execute(_FIRST[self.engine.dialect.name], {"key": _stored(key), "at": now}).first()
            return inserted is not None

    def forget(self, key: str) -> None:
        """Acting on it failed: a retry by Twilio must be acted on."""
        with write_session(self.engine) as session:
            session.execute(sa.delete(_TABLE).where(_TABLE.c.key == _stored(key)))

    def prune(self, now: datetime) -> int:
        with write_session(self.engine) as session:
            return session.execute(sa.delete(_TABLE).where(_TABLE.c.at < now - KEEP)).rowcount or 0
