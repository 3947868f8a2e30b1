"""Who is on call (SPEC §10), as a pure function beside the walk.

    on_call(schedule, overrides, at) -> [OnCall]

No I/O, no clock reads, nothing beyond the standard library (`zoneinfo` for the time zones): the
instant arrives as an argument, the schedule and its overrides as plain values. The daemon asks it
when a leg starts; the CLI asks it for `schedule who`, `oncall` and the coverage gaps.

Rules, each a unit test in tests/test_oncall.py:
- A rotation's turn k covers [start + k·shift, start + (k+1)·shift) for every integer k (before
  `start` too), held by `contacts[k mod n]`.
- `h` shifts count elapsed hours from the instant `start` names. `d` and `w` shifts count calendar
  days in the schedule's time zone: every hand-over is at `start`'s wall-clock time, whatever the
  UTC offset that day (an 08:00 hand-over stays at 08:00 across a DST change, so that turn is an
  hour shorter or longer).
- A rotation covers an instant only inside one of its `active` windows (none: always). A window
  belongs to the day it starts on; `to` at or before `from` ends on the next day; `24:00` is the
  end of the day.
- Wall-clock times are resolved in the schedule's zone: one that does not exist (spring forward)
  means the first instant after the gap; an ambiguous one (fall back) its first occurrence.
- The on-call set is the union of the rotations' holders (rotation order, each person once), then
  the overrides active at that instant applied in the order they were made: plain `by` replaces
  everyone; `instead_of` replaces only that person, and does nothing while they are not on call;
  `add` joins them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOURS, DAYS_UNIT, WEEKS = "h", "d", "w"
DAY_MINUTES = 24 * 60


@dataclass(frozen=True)
class Window:
    """Weekly: on each of `days` (0 = Monday), from `start` to `end` minutes after local midnight;
    `end` <= `start` runs into the next day; `end` 1440 is midnight at the end of the day."""

    days: frozenset[int]
    start: int
    end: int

    @property
    def overnight(self) -> bool:
        return self.end <= self.start


@dataclass(frozen=True)
class Rotation:
    name: str
    contacts: tuple[str, ...]
    shift: int  # how many `unit`s one turn lasts
    unit: str  # HOURS, DAYS_UNIT or WEEKS
    start: datetime  # naive: wall-clock time in the schedule's zone
    active: tuple[Window, ...] = ()  # empty: always


@dataclass(frozen=True)
class Schedule:
    id: str
    timezone: str
    rotations: tuple[Rotation, ...]


@dataclass(frozen=True)
class Override:
    id: str
    by: str
    start: datetime  # aware
    until: datetime  # aware, after start
    instead_of: str | None = None
    add: bool = False


@dataclass(frozen=True)
class OnCall:
    contact: str
    rotation: str | None  # the rotation whose turn it is, or None for an override
    override: str | None  # the override that put them here
    until: datetime  # when this stops being the reason they are on call (turn, window or override end)


# -- wall-clock time ---------------------------------------------------------------------------------


def resolve(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant (UTC) a naive wall-clock time names in `zone`: an ambiguous time (fall back) is its
    first occurrence; a time in a spring-forward gap is the first instant after the gap."""
    first = wall.replace(tzinfo=zone, fold=0)
    instant = first.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant  # exists (fold=0 is the first occurrence when ambiguous)
    # In a gap: fold=1 reads it with the offset after the change (an instant before the gap),
    # fold=0 with the offset before (after the gap); the change lies between. zoneinfo does not
    # expose its transitions, so find it by halving (offsets change on whole seconds).
    low = math.floor(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = math.ceil(instant.timestamp())
    after = instant.astimezone(zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def local(at: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall-clock time of an instant in `zone`."""
    return at.astimezone(zone).replace(tzinfo=None)


# -- turns -------------------------------------------------------------------------------------------


def _length(rotation: Rotation) -> timedelta:
    if rotation.unit == HOURS:
        return timedelta(hours=rotation.shift)
    return timedelta(days=rotation.shift * (7 if rotation.unit == WEEKS else 1))


def turn_start(rotation: Rotation, k: int, zone: ZoneInfo) -> datetime:
    """The instant turn k begins."""
    if rotation.unit == HOURS:
        return resolve(rotation.start, zone) + k * _length(rotation)
    return resolve(rotation.start + k * _length(rotation), zone)  # calendar days: the same wall time


def turn_at(rotation: Rotation, at: datetime, zone: ZoneInfo) -> int:
    """The k whose turn covers the instant `at`."""
    length = _length(rotation)
    if rotation.unit == HOURS:
        return (at - resolve(rotation.start, zone)) // length
    k = (local(at, zone) - rotation.start) // length  # a first guess from wall-clock times, then exact
    while turn_start(rotation, k, zone) > at:
        k -= 1
    while turn_start(rotation, k + 1, zone) <= at:
        k += 1
    return k


def holder(rotation: Rotation, k: int) -> str:
    return rotation.contacts[k % len(rotation.contacts)]


# -- active windows ----------------------------------------------------------------------------------


def _occurrence(window: Window, day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    begin = datetime.combine(day, time()) + timedelta(minutes=window.start)
    end_day = day + timedelta(days=1) if window.overnight else day
    end = datetime.combine(end_day, time()) + timedelta(minutes=window.end)
    return resolve(begin, zone), resolve(end, zone)


def window_around(rotation: Rotation, at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime] | None:
    """The occurrence of an active window covering `at` (the one ending last if several do), or
    None. With no windows the rotation is always active: None is never returned then."""
    if not rotation.active:
        return at, datetime.max.replace(tzinfo=UTC)
    today = local(at, zone).date()
    found: tuple[datetime, datetime] | None = None
    for day in (today - timedelta(days=1), today):  # a window that began yesterday may still run
        for window in rotation.active:
            if day.weekday() not in window.days:
                continue
            begin, end = _occurrence(window, day, zone)
            if begin <= at < end and (found is None or end > found[1]):
                found = (begin, end)
    return found


def covered_until(rotation: Rotation, at: datetime, zone: ZoneInfo, limit: datetime | None = None) -> datetime | None:
    """When the rotation stops covering, from `at` on, following windows that touch or overlap (Friday
    night into Saturday into Sunday), looking no further than `limit` (default: 8 days on); None if
    it does not cover `at`. One sweep over the windows' occurrences up to `limit`, in order."""
    found = window_around(rotation, at, zone)
    if found is None:
        return None
    if not rotation.active:
        return found[1]
    limit = limit if limit is not None else at + timedelta(days=8)
    end = found[1]
    day, last = local(at, zone).date(), local(limit, zone).date()
    occurrences = []
    while day <= last:
        occurrences += [_occurrence(w, day, zone) for w in rotation.active if day.weekday() in w.days]
        day += timedelta(days=1)
    for begin, finish in sorted(occurrences):
        if end >= limit or begin > end:
            break
        end = max(end, finish)
    return end


def window_edges(rotation: Rotation, start: datetime, end: datetime, zone: ZoneInfo) -> list[datetime]:
    """Every instant in [start, end) at which one of the rotation's windows opens or closes."""
    edges = []
    day = local(start, zone).date() - timedelta(days=1)
    last = local(end, zone).date()
    while day <= last:
        for window in rotation.active:
            if day.weekday() in window.days:
                edges += [t for t in _occurrence(window, day, zone) if start <= t < end]
        day += timedelta(days=1)
    return edges


# -- who ---------------------------------------------------------------------------------------------


def on_call(schedule: Schedule, overrides: list[Override] | tuple[Override, ...], at: datetime) -> list[OnCall]:
    """Who is on call at the instant `at`. `overrides` in the order they were made."""
    zone = ZoneInfo(schedule.timezone)
    people: list[OnCall] = []
    for rotation in schedule.rotations:
        if not rotation.contacts:
            continue
        k = turn_at(rotation, at, zone)
        turn_end = turn_start(rotation, k + 1, zone)
        covered = covered_until(rotation, at, zone, turn_end)
        if covered is None:
            continue
        who = holder(rotation, k)
        if any(p.contact == who for p in people):
            continue
        people.append(OnCall(who, rotation.name, None, min(turn_end, covered)))
    for override in overrides:
        if not override.start <= at < override.until:
            continue
        mine = OnCall(override.by, None, override.id, override.until)
        if override.add:
            if all(p.contact != override.by for p in people):
                people.append(mine)
        elif override.instead_of is not None:
            if any(p.contact == override.instead_of for p in people):
                people = [mine if p.contact == override.instead_of else p for p in people]
                people = [p for i, p in enumerate(people) if all(q.contact != p.contact for q in people[:i])]
        else:
            people = [mine]
    return people


def changes(schedule: Schedule, overrides: list[Override] | tuple[Override, ...], start: datetime, end: datetime) -> list[datetime]:
    """Every instant in (start, end) at which who is on call may change: hand-overs, window edges,
    override edges. Between two consecutive ones `on_call` is constant."""
    zone = ZoneInfo(schedule.timezone)
    found: set[datetime] = set()
    for rotation in schedule.rotations:
        k = turn_at(rotation, start, zone) + 1
        while (t := turn_start(rotation, k, zone)) < end:
            found.add(t)
            k += 1
        found.update(window_edges(rotation, start, end, zone))
    for override in overrides:
        found.update(t for t in (override.start, override.until) if start < t < end)
    return sorted(t for t in found if start < t < end)


def gaps(schedule: Schedule, overrides: list[Override] | tuple[Override, ...], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """The stretches of [start, end) with nobody on call, joined where they touch."""
    points = [start, *changes(schedule, overrides, start, end), end]
    out: list[tuple[datetime, datetime]] = []
    for begin, finish in zip(points, points[1:]):
        if on_call(schedule, overrides, begin):
            continue
        if out and out[-1][1] == begin:
            out[-1] = (out[-1][0], finish)
        else:
            out.append((begin, finish))
    return out


def turns(schedule: Schedule, overrides: list[Override] | tuple[Override, ...], start: datetime, end: datetime) -> list[tuple[datetime, datetime, list[OnCall]]]:
    """[start, end) cut where who is on call changes: (from, until, who) for each stretch."""
    points = [start, *changes(schedule, overrides, start, end), end]
    out: list[tuple[datetime, datetime, list[OnCall]]] = []
    for begin, finish in zip(points, points[1:]):
        who = on_call(schedule, overrides, begin)
        if out and [p.contact for p in out[-1][2]] == [p.contact for p in who]:
            out[-1] = (out[-1][0], finish, out[-1][2])
        else:
            out.append((begin, finish, who))
    return out


def arrivals(
    schedule: Schedule, overrides: list[Override] | tuple[Override, ...], start: datetime, end: datetime
) -> list[tuple[datetime, OnCall]]:
    """Who came on call in (start, end], and when: at each instant who is on call may change, the
    people on call then who were not just before (a turn's hand-over, a window opening, an override
    starting). What hand-over notices are sent for."""
    out: list[tuple[datetime, OnCall]] = []
    tick = timedelta(microseconds=1)
    for instant in changes(schedule, overrides, start, end + tick):
        before = {p.contact for p in on_call(schedule, overrides, instant - tick)}
        out += [(instant, p) for p in on_call(schedule, overrides, instant) if p.contact not in before]
    return out
