"""SMS page codes and the wrong-code limit, in the database so every replica shares them.

A code is numeric, unique among the open pages to one phone number, and never reused for that
number within 72 hours. A reply counts only from the number its code was sent to. Five wrong
codes from one number within 10 minutes replace its open codes with longer ones (`replace_codes`).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.engine import Engine

from escalator import walk
from escalator.replies import CODE_DIGITS
from escalator.store.db import read_session, write_session
from escalator.store.tx import Tx, write_tx
from escalator.store.tables import IncidentRow, SmsCodeRow, SmsStrikeRow
from escalator.walk import PageCmd

CODE_REUSE = timedelta(hours=72)
STRIKES = 5  # wrong codes from one number within STRIKE_WINDOW before its codes are replaced
STRIKE_WINDOW = timedelta(minutes=10)
REPLACED_DIGITS = 6  # a replaced code is longer: a million possibilities for the next STRIKES guesses
PROBES = 8
CROWDED_FOR = 3600.0

# Built once (the allocation runs for every SMS page). A code of a number is in use while it is
# under 72 hours old or its incident is still open; the incident is joined by its key (an IN over
# all open incidents would be read in full for every lookup).
_CODES, _INCIDENTS = SmsCodeRow.__table__, IncidentRow.__table__
_IN_USE = (
    _CODES.join(_INCIDENTS, _INCIDENTS.c.id == _CODES.c.incident_id),
    sa.and_(_CODES.c.phone == sa.bindparam("phone"),
            sa.or_(_CODES.c.created_at >= sa.bindparam("since"), _INCIDENTS.c.status.in_(walk.ACTIVE))),
)
_PROBE = sa.select(_CODES.c.id).select_from(_IN_USE[0]).where(_IN_USE[1], _CODES.c.code == sa.bindparam("code")).limit(1)
_TAKEN = sa.select(_CODES.c.code).select_from(_IN_USE[0]).where(_IN_USE[1])
_CODE_OF_PAGE = sa.select(_CODES.c.code).where(_CODES.c.incident_id == sa.bindparam("incident"), _CODES.c.page_key == sa.bindparam("key"))
_LOCK_NUMBER = sa.text("SELECT pg_advisory_xact_lock(hashtext(:p))")


def _waiting() -> sa.ColumnElement[bool]:
    """A code a reply may act on: its incident waits for somebody, or it is the acker's and the acker
    is being reminded (`reminding` in the walk's state: only then, so the acker's bare ACK for a new
    incident is not made ambiguous by one they hold for hours)."""
    return sa.or_(
        IncidentRow.status.in_(walk.ACTIVE),
        sa.and_(
            IncidentRow.status == walk.ACKNOWLEDGED, IncidentRow.deadline.is_not(None), IncidentRow.acked_by == SmsCodeRow.contact,
            IncidentRow.state["reminding"].as_boolean().is_(True),
        ),
    )


@dataclass(frozen=True)
class CodeRequest:
    """An SMS page that needs its reply code, asked for by a step (escalator.store.incidents)."""

    phone: str
    incident_id: str
    page: PageCmd
    now: datetime
    fresh: bool  # the incident was created in this transaction: the page cannot have a code yet
    out: dict[str, str]  # page key → code, filled in by `allocate`


class SmsCodes:
    """The one place reply codes are allocated: for a page being decided and for one re-sent after a
    crash (which keeps the code it has), always inside the step's transaction."""

    def __init__(self, engine: Engine, rng: secrets.SystemRandom | None = None):
        self.engine = engine
        self.rng = rng or secrets.SystemRandom()
        self._crowded: dict[str, tuple[int, float]] = {}  # phone → (code length to start with, until)

    def code_for(self, incident_id: str, page: PageCmd, phone: str, now: datetime) -> str:
        """The page's code in a transaction of its own (tests and tools)."""
        with write_tx(self.engine) as tx:
            return self.code_for_in(tx, incident_id, page, phone, now)

    def allocate(self, tx: Tx) -> None:
        """A `Tx.before_commit` hook: the codes the transaction's steps asked for, after all of them,
        in phone order. A number is locked while its codes are chosen (PostgreSQL, across replicas):
        taking those locks last, and always in the same order, means two transactions can never each
        hold what the other waits for (a row, or another number)."""
        requests, tx.code_requests = tx.code_requests, []
        for r in sorted(requests, key=lambda r: r.phone):
            r.out[r.page.key] = self.code_for_in(tx, r.incident_id, r.page, r.phone, r.now, r.fresh)

    def code_for_in(self, tx: Tx, incident_id: str, page: PageCmd, phone: str, now: datetime, fresh: bool = False) -> str:
        """The page's code: the one it already has (a re-send), or a new one for this number."""
        allocated = tx.codes_given
        if phone not in allocated:
            allocated[phone] = set()
            if self.engine.dialect.name == "postgresql":  # one allocation per number at a time, across replicas
                tx.read(_LOCK_NUMBER, {"p": phone})
        if not fresh:
            existing = tx.session.scalar(_CODE_OF_PAGE, {"incident": incident_id, "key": page.key})
            if existing:
                return existing
        since = now - CODE_REUSE
        code = self._probe(tx.session, phone, since, allocated[phone])
        if code is None:  # the number's recent codes crowd the space: look at all of them
            code = self._pick(set(tx.session.scalars(_TAKEN, {"phone": phone, "since": since})) | allocated[phone])
        allocated[phone].add(code)
        # Inserted with the transaction's other rows; codes given earlier in it are in `allocated`.
        tx.insert(_CODES, dict(
            phone=phone, code=code, incident_id=incident_id, page_key=page.key, contact=page.contact,
            cycle=page.cycle, leg_index=page.leg_index, created_at=now,
        ))
        return code

    def _probe(self, session: Session, phone: str, since: datetime, allocated: set[str]) -> str | None:
        """Random codes, each checked with one indexed lookup, so an allocation costs the same however
        many pages the number has had (loading every code of a busy number did not). Where PROBES
        picks in a row are taken, the space is crowded: the next longer codes are tried, and this
        process remembers it for the number for CROWDED_FOR (then tries short codes again)."""
        start, until = self._crowded.get(phone, (CODE_DIGITS, 0.0))
        if time.monotonic() >= until:
            start = CODE_DIGITS
        for digits in range(start, start + 3):
            for _ in range(PROBES):
                code = f"{self.rng.randrange(10**digits):0{digits}d}"
                if code in allocated:
                    continue
                if session.scalar(_PROBE, {"phone": phone, "since": since, "code": code}) is None:
                    if digits > CODE_DIGITS and digits != start:
                        self._crowded[phone] = (digits, time.monotonic() + CROWDED_FOR)
                    return code
        return None

    def _pick(self, taken: set[str], digits: int = CODE_DIGITS) -> str:
        while True:
            space = 10**digits
            if len(taken) < space // 2:  # plenty free: random picks find one fast
                while True:
                    code = f"{self.rng.randrange(space):0{digits}d}"
                    if code not in taken:
                        return code
            free = [f"{n:0{digits}d}" for n in range(space) if f"{n:0{digits}d}" not in taken]
            if free:
                return self.rng.choice(free)
            digits += 1  # every 4-digit code used for this number in 72 h: longer codes

    def open_pages(self, phone: str) -> list[SmsCodeRow]:
        """Pages to this number whose incident still waits for somebody, newest first; and, while the
        acker is being reminded of an expiring acknowledgement (SPEC §11), the acker's pages of it:
        their reply confirms it."""
        with read_session(self.engine) as session:
            return list(
                session.scalars(
                    sa.select(SmsCodeRow)
                    .join(IncidentRow, IncidentRow.id == SmsCodeRow.incident_id)
                    .where(SmsCodeRow.phone == phone, _waiting(), SmsCodeRow.replaced_at.is_(None))
                    .order_by(SmsCodeRow.created_at.desc(), SmsCodeRow.id.desc())
                )
            )

    def current(self, incident_id: str, page_key: str) -> SmsCodeRow | None:
        """The code a page has now (after a replacement: the new one)."""
        with read_session(self.engine) as session:
            return session.scalar(sa.select(SmsCodeRow).where(
                SmsCodeRow.incident_id == incident_id, SmsCodeRow.page_key == page_key, SmsCodeRow.replaced_at.is_(None)
            ))

    def find(self, phone: str, code: str) -> SmsCodeRow | None:
        """The page a code refers to, for this number only, within the reuse period or still open."""
        for row in self.open_pages(phone):
            if row.code == code:
                return row
        return None

    def latest(self, phone: str, code: str, now: datetime) -> SmsCodeRow | None:
        """A code of this number from the last 72 hours, open, closed or replaced (to answer late
        replies politely)."""
        with read_session(self.engine) as session:
            return session.scalar(
                sa.select(SmsCodeRow)
                .where(SmsCodeRow.phone == phone, SmsCodeRow.code == code, SmsCodeRow.created_at >= now - CODE_REUSE)
                .order_by(SmsCodeRow.created_at.desc())
                .limit(1)
            )

    def strike(self, phone: str, now: datetime) -> int:
        """Count a wrong code from this number; returns how many it sent in the last STRIKE_WINDOW."""
        with write_session(self.engine) as session:
            session.add(SmsStrikeRow(phone=phone, at=now))
            session.execute(sa.delete(SmsStrikeRow).where(SmsStrikeRow.at < now - STRIKE_WINDOW))
            session.flush()
            return session.scalar(
                sa.select(sa.func.count()).select_from(SmsStrikeRow)
                .where(SmsStrikeRow.phone == phone, SmsStrikeRow.at >= now - STRIKE_WINDOW)
            ) or 0

    def replace_codes(self, phone: str, now: datetime) -> list[SmsCodeRow]:
        """Too many wrong codes from this number: lock the codes, not the number. Every open page
        to it gets a new, longer code, its strikes start over, and the new rows are returned, to be
        sent to the number itself. Whoever guesses with a spoofed sender starts again from nothing,
        while the person holding the phone keeps acknowledging.

        The old codes stop working but stay reserved (never given out again within 72 hours: a late
        reply with one must not reach another page). Under the number's lock the strikes are
        counted again, so two replicas seeing the fifth wrong code at once replace the codes once."""
        with write_session(self.engine) as session:
            if self.engine.dialect.name == "postgresql":
                session.execute(_LOCK_NUMBER, {"p": phone})
            recent = session.scalar(
                sa.select(sa.func.count()).select_from(SmsStrikeRow)
                .where(SmsStrikeRow.phone == phone, SmsStrikeRow.at >= now - STRIKE_WINDOW)
            ) or 0
            if recent < STRIKES:
                return []  # replaced meanwhile (another replica), or not due
            rows = list(session.scalars(
                sa.select(SmsCodeRow).join(IncidentRow, IncidentRow.id == SmsCodeRow.incident_id)
                .where(SmsCodeRow.phone == phone, _waiting(), SmsCodeRow.replaced_at.is_(None))
                .order_by(SmsCodeRow.created_at.desc(), SmsCodeRow.id.desc())
            ))
            taken = set(session.scalars(_TAKEN, {"phone": phone, "since": now - CODE_REUSE}))
            fresh = []
            for row in rows:
                code = self._pick(taken, REPLACED_DIGITS)
                taken.add(code)
                key, row.page_key, row.replaced_at = row.page_key, f"{row.page_key}#replaced-{row.id}", now
                session.flush()  # the page's key is free for its new row
                new_row = SmsCodeRow(phone=phone, code=code, incident_id=row.incident_id, page_key=key, contact=row.contact,
                                     cycle=row.cycle, leg_index=row.leg_index, created_at=now)
                session.add(new_row)
                fresh.append(new_row)
            session.execute(sa.delete(SmsStrikeRow).where(SmsStrikeRow.phone == phone))
            return fresh
