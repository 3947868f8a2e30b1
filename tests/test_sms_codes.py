"""SMS codes: unique among a number's open pages, never reused within 72 hours; wrong codes replace them."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from freezegun import freeze_time

from escalator import clock, walk
from escalator.store.incidents import IncidentStore, NewIncident
from escalator.store.sms_codes import SmsCodes
from escalator.walk import PageCmd
from tests.test_engine import ladders  # noqa: F401 - fixture

PHONE = "+14155550101"


def page(key: str = "c1.l0.alice.sms") -> PageCmd:
    return PageCmd(key, "alice", "sms", 1, 0, "primary", 120)


def open_incident(store: IncidentStore, incident_id: str) -> None:
    store.open(NewIncident(incident_id, "night", "No heat"), None, clock.now())


class Narrow(random.Random):
    """Picks from a tiny range first, to force collisions."""

    def randrange(self, n):  # noqa: D401
        return super().randrange(3)


def test_codes_are_unique_per_number_and_stable_per_page(ladders) -> None:
    store = IncidentStore(ladders.engine)
    codes = SmsCodes(ladders.engine, Narrow(7))
    with freeze_time("2026-11-22 03:00:00", real_asyncio=True):
        for i in range(3):
            open_incident(store, f"inc-{i}")
        now = clock.now()
        first = [codes.code_for(f"inc-{i}", page(), PHONE, now) for i in range(3)]
        assert len(set(first)) == 3 and all(len(c) == 4 and c.isdigit() for c in first)
        assert codes.code_for("inc-0", page(), PHONE, now) == first[0]  # a re-send keeps its code
        other_number = codes.code_for("inc-0", page("c1.l0.alice.sms2"), "+14155550199", now)
        assert other_number in {"0000", "0001", "0002"}  # another number may use the same codes
        assert [r.code for r in codes.open_pages(PHONE)] == list(reversed(first))
        assert codes.find(PHONE, first[1]).incident_id == "inc-1"
        only_first = next(c for c in first if c != other_number)
        assert codes.find("+14155550199", only_first) is None  # a code counts only from the number it was sent to
        assert codes.find("+14155550199", other_number).phone == "+14155550199"


def test_no_reuse_within_72_hours_even_after_the_incident_closed(ladders) -> None:
    store = IncidentStore(ladders.engine)
    codes = SmsCodes(ladders.engine, Narrow(1))
    with freeze_time("2026-11-22 03:00:00", real_asyncio=True) as frozen:
        open_incident(store, "old")
        old = codes.code_for("old", page(), PHONE, clock.now())
        store.step("old", walk.Resolve("ops"), clock.now())
        assert codes.open_pages(PHONE) == []
        frozen.tick(timedelta(hours=71))
        picked = set()
        for i in range(2):
            open_incident(store, f"new-{i}")
            picked.add(codes.code_for(f"new-{i}", page(), PHONE, clock.now()))
        assert old not in picked  # 71 h later: still not reused
        for i in range(2):
            store.step(f"new-{i}", walk.Resolve("ops"), clock.now())
        frozen.tick(timedelta(hours=73))  # the first code is 144 h old, the others 73 h
        open_incident(store, "later")
        again = codes.code_for("later", page(), PHONE, clock.now())
        assert again in {"0000", "0001", "0002"}  # free to reuse after 72 h


def test_codes_of_incidents_still_open_are_never_reused(ladders) -> None:
    store = IncidentStore(ladders.engine)
    codes = SmsCodes(ladders.engine, Narrow(3))
    start = datetime(2026, 11, 22, 3, tzinfo=UTC)
    open_incident(store, "long")
    kept = codes.code_for("long", page(), PHONE, start)
    later = start + timedelta(days=5)  # an exhausted incident can stay open for days
    for i in range(2):
        open_incident(store, f"n-{i}")
        assert codes.code_for(f"n-{i}", page(), PHONE, later) != kept


def test_all_four_digit_codes_used_moves_to_five_digits(ladders) -> None:
    codes = SmsCodes(ladders.engine, random.Random(1))
    assert len(codes._pick({f"{n:04d}" for n in range(10000)})) == 5
    nearly = {f"{n:04d}" for n in range(10000)} - {"4821"}
    assert codes._pick(nearly) == "4821"


def test_wrong_codes_are_counted_per_number_within_ten_minutes(ladders) -> None:
    codes = SmsCodes(ladders.engine)
    t = datetime(2026, 11, 22, 3, tzinfo=UTC)
    counts = [codes.strike(PHONE, t + timedelta(minutes=2 * i)) for i in range(5)]
    assert counts == [1, 2, 3, 4, 5]  # the fifth within 10 minutes
    assert codes.strike("+14155550199", t + timedelta(minutes=9)) == 1  # another number counts alone
    slow = "+14155550177"  # five wrong codes spread over 20 minutes never reach the limit
    assert max(codes.strike(slow, t + timedelta(minutes=5 * i)) for i in range(5)) <= 3


def test_replacing_codes_locks_the_old_ones_and_gives_longer_new_ones(ladders) -> None:
    """Lock the code, not the number: after too many wrong codes every open page to the number
    gets a new six-digit code, the old code finds nothing, and the strikes start over."""
    store = IncidentStore(ladders.engine, codes=SmsCodes(ladders.engine))
    codes = SmsCodes(ladders.engine)
    open_incident(store, "r-1")
    open_incident(store, "r-2")
    before = {p.incident_id: p.code for p in codes.open_pages(PHONE)}
    now = clock.now()
    for i in range(5):
        codes.strike(PHONE, now)
    replaced = codes.replace_codes(PHONE, now)
    after = {p.incident_id: p.code for p in codes.open_pages(PHONE)}
    assert set(before) == set(after) == {"r-1", "r-2"} == {r.incident_id for r in replaced}
    assert all(len(code) == 6 and code.isdigit() for code in after.values())
    assert not set(before.values()) & set(after.values()) and len(set(after.values())) == 2
    assert codes.find(PHONE, before["r-1"]) is None and codes.find(PHONE, after["r-1"]).incident_id == "r-1"
    assert codes.strike(PHONE, now) == 1  # counting starts over
    assert codes.replace_codes(PHONE, now) == []  # under the limit (or replaced by another replica meanwhile): nothing
    assert codes.current("r-1", "c1.l0.alice.sms").code == after["r-1"]
    late = codes.latest(PHONE, before["r-1"], now)
    assert late is not None and late.replaced_at is not None  # known, for a polite answer, but not open


def test_a_replaced_code_is_not_given_out_again_within_72_hours(ladders) -> None:
    """A late reply with an old code must never reach another page."""
    store = IncidentStore(ladders.engine, codes=SmsCodes(ladders.engine, Narrow(3)))
    codes = SmsCodes(ladders.engine, Narrow(3))
    open_incident(store, "old")
    [old] = [p.code for p in codes.open_pages(PHONE)]
    now = clock.now()
    for _ in range(5):
        codes.strike(PHONE, now)
    codes.replace_codes(PHONE, now)
    for i in range(3):  # Narrow picks from three codes first: a reused one would show here
        open_incident(store, f"new-{i}")
    given = [p.code for p in codes.open_pages(PHONE) if p.incident_id.startswith("new-")]
    assert old not in given and len(set(given)) == 3


def test_a_number_with_thousands_of_codes_still_gets_one_in_a_few_lookups(ladders) -> None:
    """9,990 of the 10,000 four-digit codes in use for one number: the allocation neither reads them
    all nor repeats one; it moves to five digits after a few taken picks."""
    import sqlalchemy as sa

    from escalator.store.tables import SmsCodeRow

    store = IncidentStore(ladders.engine)
    codes = SmsCodes(ladders.engine, random.Random(5))
    now = clock.now()
    open_incident(store, "busy")
    used = [f"{n:04d}" for n in range(10000) if n % 1000 != 7]
    with ladders.engine.begin() as connection:
        connection.execute(sa.insert(SmsCodeRow.__table__), [
            dict(phone=PHONE, code=c, incident_id="busy", page_key=f"k{c}", contact="alice", cycle=1, leg_index=0, created_at=now)
            for c in used
        ])
    statements: list[str] = []

    def seen(connection, cursor, statement, *rest) -> None:
        statements.append(" ".join(statement.split()))

    sa.event.listen(ladders.engine, "before_cursor_execute", seen)
    try:
        code = codes.code_for("busy", page(), PHONE, now)
    finally:
        sa.event.remove(ladders.engine, "before_cursor_execute", seen)
    assert code not in used and code.isdigit() and len(code) in (4, 5)
    probes = [s for s in statements if s.startswith("SELECT sms_codes.id")]
    assert 1 <= len(probes) <= 2 * 8, statements  # four digits, then five; one indexed lookup each
    assert not any(s.startswith("SELECT sms_codes.code FROM sms_codes JOIN") for s in statements)  # never read them all
    statements.clear()
    sa.event.listen(ladders.engine, "before_cursor_execute", seen)
    try:
        second = codes.code_for("busy", page("c1.l0.alice.sms2"), PHONE, now)
    finally:
        sa.event.remove(ladders.engine, "before_cursor_execute", seen)
    assert len(second) == 5 and second != code  # remembered: the number's short codes are crowded
    assert len([s for s in statements if s.startswith("SELECT sms_codes.id")]) == 1
