"""Who is on call (escalator/oncall.py): the rules of SPEC §10 on plain values, across DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from escalator.oncall import (
    DAYS_UNIT, HOURS, WEEKS, OnCall, Override, Rotation, Schedule, Window, arrivals, changes, gaps, on_call, resolve, turn_at,
    turn_start, turns,
)

CHI = ZoneInfo("America/Chicago")
WEEKDAYS = frozenset(range(5))
WEEKEND = frozenset({5, 6})


def wall(text: str) -> datetime:
    return datetime.fromisoformat(text)


def at(text: str) -> datetime:
    """An instant written as Chicago wall-clock time with its offset, e.g. '2026-11-01 01:30-05:00'."""
    return datetime.fromisoformat(text).astimezone(UTC)


def who(schedule: Schedule, when: datetime, overrides=()) -> list[str]:
    return [p.contact for p in on_call(schedule, list(overrides), when)]


def one(rotation: Rotation, tz: str = "America/Chicago") -> Schedule:
    return Schedule("techs", tz, (rotation,))


def weekly(start: str, contacts=("alice", "bob", "carol"), shift=1, unit=WEEKS, active=()) -> Rotation:
    return Rotation("nights", tuple(contacts), shift, unit, wall(start), tuple(active))


# -- wall-clock time ----------------------------------------------------------------------------------


def test_a_time_in_the_spring_forward_gap_is_the_first_instant_after_it() -> None:
    assert resolve(wall("2026-03-08 02:30"), CHI) == at("2026-03-08 03:00-05:00")
    assert resolve(wall("2026-03-08 02:00"), CHI) == at("2026-03-08 03:00-05:00")
    assert resolve(wall("2026-03-08 01:59"), CHI) == at("2026-03-08 01:59-06:00")


def test_an_ambiguous_time_on_the_fall_back_night_is_its_first_occurrence() -> None:
    assert resolve(wall("2026-11-01 01:30"), CHI) == at("2026-11-01 01:30-05:00")  # CDT, not the CST one an hour later
    assert resolve(wall("2026-11-01 02:00"), CHI) == at("2026-11-01 02:00-06:00")


# -- turns ---------------------------------------------------------------------------------------------


def test_weekly_turns_take_contacts_in_order_and_repeat() -> None:
    s = one(weekly("2026-11-30 08:00"))
    assert who(s, at("2026-11-30 08:00-06:00")) == ["alice"]
    assert who(s, at("2026-12-07 07:59-06:00")) == ["alice"]
    assert who(s, at("2026-12-07 08:00-06:00")) == ["bob"]
    assert who(s, at("2026-12-14 08:00-06:00")) == ["carol"]
    assert who(s, at("2026-12-21 08:00-06:00")) == ["alice"]


def test_a_rotation_whose_start_is_in_the_future_repeats_before_it() -> None:
    s = one(weekly("2027-01-04 08:00"))  # alice's first turn is next year
    assert who(s, at("2026-12-30 12:00-06:00")) == ["carol"]  # turn -1
    assert who(s, at("2026-12-24 12:00-06:00")) == ["bob"]  # turn -2
    assert who(s, at("2027-01-04 07:59-06:00")) == ["carol"]
    assert who(s, at("2027-01-04 08:00-06:00")) == ["alice"]


def test_a_0130_hand_over_on_the_fall_back_night_happens_at_the_first_0130() -> None:
    s = one(weekly("2026-10-25 01:30"))  # Sundays 01:30; 2026-11-01 is the fall-back night
    assert who(s, at("2026-11-01 01:29-05:00")) == ["alice"]
    assert who(s, at("2026-11-01 01:30-05:00")) == ["bob"]  # the first 01:30 (CDT)
    assert who(s, at("2026-11-01 01:30-06:00")) == ["bob"]  # the second 01:30 (CST) changes nothing
    assert turn_start(s.rotations[0], 1, CHI) - turn_start(s.rotations[0], 0, CHI) == timedelta(days=7)
    # the next hand-over is again at 01:30 wall-clock time, one week and one hour later
    assert turn_start(s.rotations[0], 2, CHI) == at("2026-11-08 01:30-06:00")
    assert who(s, at("2026-11-08 01:29-06:00")) == ["bob"]


def test_a_0230_hand_over_on_the_spring_forward_night_happens_when_the_gap_ends() -> None:
    s = one(weekly("2026-03-01 02:30"))  # Sundays 02:30; 02:30 does not exist on 2026-03-08
    assert who(s, at("2026-03-08 01:59-06:00")) == ["alice"]
    assert who(s, at("2026-03-08 03:00-05:00")) == ["bob"]
    assert turn_start(s.rotations[0], 1, CHI) == at("2026-03-08 03:00-05:00")
    assert turn_start(s.rotations[0], 2, CHI) == at("2026-03-15 02:30-05:00")


def test_daily_hand_overs_stay_at_0800_across_both_changes() -> None:
    r = weekly("2026-03-01 08:00", shift=1, unit=DAYS_UNIT)
    for day in ("2026-03-07", "2026-03-08", "2026-03-09", "2026-10-31", "2026-11-01", "2026-11-02"):
        k = turn_at(r, resolve(wall(f"{day} 08:00"), CHI), CHI)
        assert turn_start(r, k, CHI).astimezone(CHI).strftime("%H:%M") == "08:00", day
    # the turns that hold a change are an hour shorter (spring) and longer (fall)
    spring = turn_at(r, at("2026-03-08 12:00-05:00"), CHI)
    assert turn_start(r, spring, CHI) - turn_start(r, spring - 1, CHI) == timedelta(hours=23)
    fall = turn_at(r, at("2026-11-01 12:00-06:00"), CHI)
    assert turn_start(r, fall, CHI) - turn_start(r, fall - 1, CHI) == timedelta(hours=25)


def test_a_one_hour_shift_counts_elapsed_hours_through_both_changes() -> None:
    s = one(weekly("2026-03-08 00:00", contacts=("a", "b"), shift=1, unit=HOURS))
    # spring forward: 00:00 CST a, 01:00 b, then 03:00 CDT is one hour after 01:00 CST: a
    assert who(s, at("2026-03-08 00:30-06:00")) == ["a"]
    assert who(s, at("2026-03-08 01:30-06:00")) == ["b"]
    assert who(s, at("2026-03-08 03:30-05:00")) == ["a"]
    f = one(weekly("2026-11-01 00:00", contacts=("a", "b"), shift=1, unit=HOURS))
    # fall back: 00:00 CDT a, 01:00 CDT b, 01:00 CST (an hour later, same wall time) a, 02:00 CST b
    assert who(f, at("2026-11-01 00:30-05:00")) == ["a"]
    assert who(f, at("2026-11-01 01:30-05:00")) == ["b"]
    assert who(f, at("2026-11-01 01:30-06:00")) == ["a"]
    assert who(f, at("2026-11-01 02:30-06:00")) == ["b"]


# -- active windows ------------------------------------------------------------------------------------


NIGHTS = (Window(WEEKDAYS, 18 * 60, 8 * 60), Window(WEEKEND, 0, 24 * 60))


def test_nights_and_weekends_windows() -> None:
    s = one(weekly("2026-11-30 08:00", active=NIGHTS))
    assert who(s, at("2026-12-01 12:00-06:00")) == []  # Tuesday noon: office hours, not covered
    assert who(s, at("2026-12-01 18:00-06:00")) == ["alice"]
    assert who(s, at("2026-12-02 07:59-06:00")) == ["alice"]  # Tuesday's window runs into Wednesday
    assert who(s, at("2026-12-02 08:00-06:00")) == []
    assert who(s, at("2026-12-05 03:00-06:00")) == ["alice"]  # Saturday: Friday night's window, then Saturday's
    assert who(s, at("2026-12-06 23:59-06:00")) == ["alice"]  # Sunday to midnight
    assert who(s, at("2026-12-07 03:00-06:00")) == []  # Sunday's window ended at 24:00; Monday's starts at 18:00


def test_until_follows_windows_that_touch_and_stops_at_the_hand_over() -> None:
    s = one(weekly("2026-11-30 08:00", active=NIGHTS))
    [friday] = on_call(s, [], at("2026-12-04 20:00-06:00"))
    assert friday.until == at("2026-12-07 00:00-06:00")  # Fri night → Sat → Sun, until Sunday's 24:00
    t = one(weekly("2026-11-30 08:00", active=(Window(frozenset(range(7)), 18 * 60, 18 * 60),)))  # 24 h windows, every day
    [always] = on_call(t, [], at("2026-12-02 20:00-06:00"))
    assert always.until == at("2026-12-07 08:00-06:00")  # covered throughout: the turn's end


def test_an_overnight_window_on_the_last_day_of_the_week_runs_into_monday() -> None:
    s = one(weekly("2026-11-30 08:00", active=(Window(frozenset({6}), 22 * 60, 6 * 60),)))  # Sun 22:00 → Mon 06:00
    assert who(s, at("2026-12-06 21:59-06:00")) == []
    assert who(s, at("2026-12-06 22:00-06:00")) == ["alice"]
    assert who(s, at("2026-12-07 05:59-06:00")) == ["alice"]  # Monday morning: still Sunday's window (and alice's turn)
    assert who(s, at("2026-12-07 06:00-06:00")) == []
    [person] = on_call(s, [], at("2026-12-07 03:00-06:00"))
    assert person.until == at("2026-12-07 06:00-06:00")  # the window ends before the 08:00 hand-over


def test_the_on_call_set_is_the_union_of_rotations_each_person_once() -> None:
    nights = weekly("2026-11-30 08:00", active=NIGHTS)
    office = Rotation("office", ("dispatch",), 1, WEEKS, wall("2026-11-30 00:00"), (Window(WEEKDAYS, 8 * 60, 18 * 60),))
    always = Rotation("backup", ("alice", "erin"), 1, WEEKS, wall("2026-11-30 00:00"))
    s = Schedule("techs", "America/Chicago", (nights, office, always))
    assert who(s, at("2026-12-01 12:00-06:00")) == ["dispatch", "alice"]
    assert who(s, at("2026-12-01 20:00-06:00")) == ["alice"]  # nights' alice and backup's alice: once
    assert [p.rotation for p in on_call(s, [], at("2026-12-01 20:00-06:00"))] == ["nights"]


# -- overrides -----------------------------------------------------------------------------------------


def cover(oid: str, by: str, start: str, until: str, instead_of: str | None = None, add: bool = False) -> Override:
    return Override(oid, by, at(start), at(until), instead_of, add)


def test_by_replaces_everyone_instead_of_only_that_person_and_add_joins() -> None:
    s = Schedule("techs", "America/Chicago", (
        weekly("2026-11-30 08:00"), Rotation("office", ("dispatch",), 1, WEEKS, wall("2026-11-30 00:00")),
    ))
    noon = at("2026-12-01 12:00-06:00")
    assert who(s, noon) == ["alice", "dispatch"]
    everyone = cover("o1", "dave", "2026-12-01 00:00-06:00", "2026-12-02 00:00-06:00")
    assert who(s, noon, [everyone]) == ["dave"]
    only = cover("o2", "dave", "2026-12-01 00:00-06:00", "2026-12-02 00:00-06:00", instead_of="alice")
    assert who(s, noon, [only]) == ["dave", "dispatch"]
    absent = cover("o3", "dave", "2026-12-01 00:00-06:00", "2026-12-02 00:00-06:00", instead_of="bob")
    assert who(s, noon, [absent]) == ["alice", "dispatch"]  # bob is not on call: no effect
    joins = cover("o4", "dave", "2026-12-01 00:00-06:00", "2026-12-02 00:00-06:00", add=True)
    assert who(s, noon, [joins]) == ["alice", "dispatch", "dave"]
    [dave] = [p for p in on_call(s, [joins], noon) if p.contact == "dave"]
    assert dave == OnCall("dave", None, "o4", at("2026-12-02 00:00-06:00"))


def test_an_override_applies_only_inside_its_from_until() -> None:
    s = one(weekly("2026-11-30 08:00"))
    tonight = cover("o1", "bob", "2026-12-01 18:00-06:00", "2026-12-02 08:00-06:00", instead_of="alice")
    assert who(s, at("2026-12-01 17:59-06:00"), [tonight]) == ["alice"]
    assert who(s, at("2026-12-01 18:00-06:00"), [tonight]) == ["bob"]
    assert who(s, at("2026-12-02 08:00-06:00"), [tonight]) == ["alice"]


def test_an_override_of_an_override_applies_in_creation_order() -> None:
    s = one(weekly("2026-11-30 08:00"))
    first = cover("o1", "bob", "2026-12-01 00:00-06:00", "2026-12-03 00:00-06:00", instead_of="alice")
    second = cover("o2", "carol", "2026-12-01 12:00-06:00", "2026-12-02 00:00-06:00", instead_of="bob")
    noon = at("2026-12-01 13:00-06:00")
    assert who(s, noon, [first, second]) == ["carol"]
    assert who(s, noon, [second, first]) == ["bob"]  # made the other way round: carol's found no bob yet
    assert who(s, at("2026-12-02 06:00-06:00"), [first, second]) == ["bob"]  # carol's ended


# -- gaps and turns over a stretch ---------------------------------------------------------------------


def test_gaps_are_found_and_joined_where_they_touch() -> None:
    s = one(weekly("2026-11-30 08:00", active=NIGHTS))
    found = gaps(s, [], at("2026-11-30 00:00-06:00"), at("2026-12-03 00:00-06:00"))
    assert found == [
        (at("2026-11-30 00:00-06:00"), at("2026-11-30 18:00-06:00")),  # Sunday's window ended at midnight
        (at("2026-12-01 08:00-06:00"), at("2026-12-01 18:00-06:00")),
        (at("2026-12-02 08:00-06:00"), at("2026-12-02 18:00-06:00")),
    ]
    closed = cover("o1", "dispatch", "2026-12-01 08:00-06:00", "2026-12-01 18:00-06:00", add=True)
    assert len(gaps(s, [closed], at("2026-11-30 00:00-06:00"), at("2026-12-03 00:00-06:00"))) == 2


def test_turns_over_a_stretch_cut_where_the_people_change() -> None:
    s = one(weekly("2026-11-30 08:00", active=NIGHTS))
    stretch = turns(s, [], at("2026-12-04 12:00-06:00"), at("2026-12-07 12:00-06:00"))
    assert [(a, b, [p.contact for p in w]) for a, b, w in stretch] == [
        (at("2026-12-04 12:00-06:00"), at("2026-12-04 18:00-06:00"), []),
        (at("2026-12-04 18:00-06:00"), at("2026-12-07 00:00-06:00"), ["alice"]),  # Friday night through the weekend
        (at("2026-12-07 00:00-06:00"), at("2026-12-07 12:00-06:00"), []),  # Monday's window opens at 18:00 (bob's turn)
    ]


# -- properties ------------------------------------------------------------------------------------------

ZONES = st.sampled_from(["America/Chicago", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "UTC", "America/St_Johns"])
INSTANTS = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)).map(lambda d: d.replace(tzinfo=UTC))
ROTATIONS = st.builds(
    lambda contacts, shift, unit, start: Rotation("r", tuple(contacts), shift, unit, start),
    st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=5),
    st.integers(1, 4), st.sampled_from([HOURS, DAYS_UNIT, WEEKS]),
    st.datetimes(min_value=datetime(2025, 6, 1), max_value=datetime(2027, 6, 1)).map(lambda d: d.replace(second=0, microsecond=0)),
)


@settings(max_examples=300, deadline=None)
@given(rotation=ROTATIONS, zone=ZONES, when=INSTANTS)
def test_exactly_one_turn_covers_every_instant_and_its_holder_is_on_call(rotation: Rotation, zone: str, when: datetime) -> None:
    tz = ZoneInfo(zone)
    k = turn_at(rotation, when, tz)
    assert turn_start(rotation, k, tz) <= when < turn_start(rotation, k + 1, tz)
    [person] = on_call(one(rotation, zone), [], when)
    assert person.contact == rotation.contacts[k % len(rotation.contacts)]
    assert person.until == turn_start(rotation, k + 1, tz)
    if rotation.unit != HOURS:  # calendar days: every hand-over at start's wall-clock time, unless that time does not exist
        begun = turn_start(rotation, k, tz)
        expected = rotation.start + (k * rotation.shift * (7 if rotation.unit == WEEKS else 1)) * timedelta(days=1)
        assert begun == resolve(expected, tz)


@settings(max_examples=100, deadline=None)
@given(zone=ZONES, begin=INSTANTS, hours=st.integers(1, 24 * 21), data=st.data())
def test_who_is_on_call_is_constant_between_the_changes(zone: str, begin: datetime, hours: int, data) -> None:
    drawn = data.draw(st.lists(ROTATIONS, min_size=1, max_size=3))
    rotations = tuple(Rotation(f"r{i}", r.contacts, r.shift, r.unit, r.start, data.draw(st.sampled_from([(), NIGHTS])))
                      for i, r in enumerate(drawn))
    s = Schedule("s", zone, rotations)
    end = begin + timedelta(hours=hours)
    points = [begin, *changes(s, [], begin, end), end]
    for a, b in zip(points, points[1:]):
        assert a < b
        middle = a + (b - a) / 2
        assert who(s, a) == who(s, middle) == who(s, b - timedelta(microseconds=1))


def test_who_is_on_call_imports_only_what_its_allow_list_names() -> None:
    """Pure, like the walk: no I/O, no clock, no library beyond zoneinfo."""
    import ast
    from pathlib import Path

    import escalator.oncall as module

    tree = ast.parse(Path(module.__file__).read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules == {"__future__", "dataclasses", "datetime", "math", "zoneinfo"}, modules


def test_arrivals_are_who_came_on_call_and_when_for_hand_over_notices() -> None:
    s = one(weekly("2026-11-30 08:00", active=NIGHTS))
    week = arrivals(s, [], at("2026-12-07 07:00-06:00"), at("2026-12-08 09:00-06:00"))
    # Monday 08:00 is a hand-over, but bob's turn starts covering only at 18:00 (the window opens)
    assert [(t, p.contact) for t, p in week] == [(at("2026-12-07 18:00-06:00"), "bob")]
    assert week[0][1].until == at("2026-12-08 08:00-06:00")
    # the end of the interval counts, its start does not: no notice twice for adjacent scans
    edge = at("2026-12-07 18:00-06:00")
    assert [p.contact for _, p in arrivals(s, [], edge - timedelta(hours=1), edge)] == ["bob"]
    assert arrivals(s, [], edge, edge + timedelta(hours=1)) == []
    # an override that starts is an arrival; its end hands back to the turn's holder
    tonight = cover("o1", "carol", "2026-12-08 20:00-06:00", "2026-12-08 22:00-06:00", instead_of="bob")
    found = arrivals(s, [tonight], at("2026-12-08 19:00-06:00"), at("2026-12-08 23:00-06:00"))
    assert [(t, p.contact, p.override) for t, p in found] == [
        (at("2026-12-08 20:00-06:00"), "carol", "o1"), (at("2026-12-08 22:00-06:00"), "bob", None)]


def test_until_of_a_long_turn_under_a_window_covering_every_day_is_the_hand_over() -> None:
    every_day = (Window(frozenset(range(7)), 8 * 60, 8 * 60),)  # 08:00 → 08:00 the next day, each day
    s = one(weekly("2026-11-30 08:00", shift=2, active=every_day))
    [alice] = on_call(s, [], at("2026-12-01 03:00-06:00"))
    assert alice.contact == "alice" and alice.until == at("2026-12-14 08:00-06:00")  # not cut at 8 or 9 days
