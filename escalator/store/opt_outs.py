"""Numbers opted out of SMS (SPEC §11): a number that texted STOP, or that Twilio refused with error
21610, has its SMS pages fail at once until it texts START. Kept by number, as Twilio keeps it."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from escalator.store.db import read_session, write_session
from escalator.store.tables import SmsOptOutRow

STOP_REPLY, TWILIO_21610 = "STOP reply", "Twilio error 21610"


def opt_out(engine: Engine, phone: str, now: datetime, source: str) -> bool:
    """Mark a number opted out; False when it already was (the first record is kept)."""
    with write_session(engine) as session:
        if session.get(SmsOptOutRow, phone) is not None:
            return False
        session.add(SmsOptOutRow(phone=phone, at=now, source=source))
        return True


def opt_in(engine: Engine, phone: str) -> bool:
    """The number texted START: its texts go out again. False when it was not opted out."""
    with write_session(engine) as session:
        return bool(session.execute(sa.delete(SmsOptOutRow).where(SmsOptOutRow.phone == phone)).rowcount)


def opted_out(engine: Engine) -> dict[str, SmsOptOutRow]:
    """phone → how and when it opted out."""
    with read_session(engine) as session:
        return {row.phone: row for row in session.scalars(sa.select(SmsOptOutRow))}
