"""Schedule documents as validated plain values (SPEC §10): the one definition of a valid schedule.

A `schedule:` document in `ladders/` says who takes turns (rotations), for how long (shift), from
when (start, wall-clock time in the schedule's zone) and when each rotation covers (active weekly
windows). `ScheduleDoc.plan()` turns one into the plain values `escalator.oncall` computes with.
Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo
from typing import Annotated, Any, Literal



from pydantic import BeforeValidator, Field, StrictBool, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from escalator import oncall
from escalator.errors import InvalidInput, Problem
from escalator.ladders import Identifier, TimeZoneName, _Strict, _unique, format_loc, validation_errors

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
MAX_ROTATIONS = 20
MAX_ROTATION_CONTACTS = 100
MAX_WINDOWS = 50
_SHIFT_RE = re.compile(r"([1-9][0-9]{0,3})([hdw])")
_SHIFT_MAX_HOURS = 4 * 7 * 24  # 4w
_CLOCK_RE = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])")
_START_FORMAT = "%Y-%m-%d %H:%M"
START_YEARS = (2000, 2100)


def _shift(value: Any) -> Any:
    """`12h`, `1d`, `2w`: from 1h to 4w."""
    match = _SHIFT_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise PydanticCustomError("shift", "{value} is not a shift: write it like 12h, 1d or 1w", {"value": repr(value)})
    count, unit = int(match.group(1)), match.group(2)
    hours = count * {"h": 1, "d": 24, "w": 168}[unit]
    if not 1 <= hours <= _SHIFT_MAX_HOURS:
        raise PydanticCustomError("shift_range", "{value} is out of range: a shift is between 1h and 4w", {"value": repr(value)})
    return f"{count}{unit}"


def _clock(value: Any, *, end: bool) -> Any:
    match = _CLOCK_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or (match.group(1) == "24" and (match.group(2) != "00" or not end)):
        allowed = "00:00 to 24:00" if end else "00:00 to 23:59"
        raise PydanticCustomError(
            "clock", '{value} is not a time of day: write it "HH:MM", from {allowed}', {"value": repr(value), "allowed": allowed}
        )
    return f"{match.group(1)}:{match.group(2)}"


def _start(value: Any) -> Any:
    parsed: datetime | None = None
    if isinstance(value, datetime) and value.tzinfo is None:
        parsed = value.replace(second=0, microsecond=0)
    elif isinstance(value, str):
        try:
            parsed = datetime.strptime(value.strip(), _START_FORMAT)
        except ValueError:
            pass
    if parsed is not None:
        if not START_YEARS[0] <= parsed.year <= START_YEARS[1]:  # far years overflow the time arithmetic
            raise PydanticCustomError(
                "start_range", "{value} is out of range: a start is between the years {low} and {high}",
                {"value": repr(value), "low": START_YEARS[0], "high": START_YEARS[1]},
            )
        return parsed.strftime(_START_FORMAT)
    raise PydanticCustomError(
        "start", '{value} is not a start: write the wall-clock time in the schedule\'s zone, like "2026-11-30 08:00"',
        {"value": repr(value)},
    )


Shift = Annotated[str, BeforeValidator(_shift)]
From = Annotated[str, BeforeValidator(lambda v: _clock(v, end=False))]
To = Annotated[str, BeforeValidator(lambda v: _clock(v, end=True))]
Start = Annotated[str, BeforeValidator(_start)]


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


class ActiveWindow(_Strict):
    """When a rotation covers, each week: on `days`, from `from` to `to` (at or before `from`: the next day)."""

    days: tuple[Day, ...] = Field(min_length=1, max_length=7)
    start: From = Field(alias="from")
    end: To = Field(alias="to")

    @field_validator("days")
    @classmethod
    def _distinct_days(cls, days: tuple[str, ...]) -> tuple[str, ...]:
        _unique(days, "day")
        return days

    def window(self) -> oncall.Window:
        return oncall.Window(frozenset(oncall.DAYS.index(d) for d in self.days), _minutes(self.start), _minutes(self.end))

    def to_document(self) -> dict[str, Any]:
        return {"days": list(self.days), "from": self.start, "to": self.end}


class RotationDoc(_Strict):
    """People taking turns of `shift`, contacts[0]'s turn starting at `start`."""

    name: Identifier
    contacts: tuple[Identifier, ...] = Field(min_length=1, max_length=MAX_ROTATION_CONTACTS)
    shift: Shift
    start: Start
    active: tuple[ActiveWindow, ...] = Field(default=(), max_length=MAX_WINDOWS)

    @field_validator("contacts")
    @classmethod
    def _distinct_contacts(cls, contacts: tuple[str, ...]) -> tuple[str, ...]:
        _unique(contacts, "contact")
        return contacts

    def rotation(self) -> oncall.Rotation:
        return oncall.Rotation(
            self.name, self.contacts, int(self.shift[:-1]), self.shift[-1], datetime.strptime(self.start, _START_FORMAT),
            tuple(w.window() for w in self.active),
        )

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "contacts": list(self.contacts), "shift": self.shift, "start": self.start}
        if self.active:
            doc["active"] = [w.to_document() for w in self.active]
        return doc


class ScheduleDoc(_Strict):
    """Who is on call: the union of its rotations, then the overrides (escalator.oncall)."""

    name: Identifier = Field(alias="schedule")
    description: str = Field(default="", max_length=500)
    timezone: TimeZoneName = "UTC"
    notify_handoff: StrictBool = False
    rotations: tuple[RotationDoc, ...] = Field(min_length=1, max_length=MAX_ROTATIONS)

    @field_validator("rotations")
    @classmethod
    def _distinct_rotations(cls, rotations: tuple[RotationDoc, ...]) -> tuple[RotationDoc, ...]:
        _unique([r.name for r in rotations], "rotation name", key="name")
        return rotations

    def plan(self) -> oncall.Schedule:
        return oncall.Schedule(self.name, self.timezone, tuple(r.rotation() for r in self.rotations))

    def contact_ids(self) -> set[str]:
        return {c for r in self.rotations for c in r.contacts}

    def to_document(self) -> dict[str, Any]:
        return {
            "schedule": self.name,
            "description": self.description,
            "timezone": self.timezone,
            "notify_handoff": self.notify_handoff,
            "rotations": [r.to_document() for r in self.rotations],
        }


def build_schedule(document: Mapping[str, Any]) -> ScheduleDoc:
    """A schedule from a plain document; refusals name the field."""
    try:
        return ScheduleDoc.model_validate(document)
    except ValidationError as exc:
        raise InvalidInput([Problem(msg, field=format_loc(loc) or None) for loc, msg in validation_errors(exc)]) from None


def describe_schedule_change(old: ScheduleDoc | None, new: ScheduleDoc | None) -> str:
    """A one-line account of what changed between two versions, for the history."""
    if old is None:
        return f"created with {len(new.rotations)} rotations" if new else "created"
    if new is None:
        return "deleted"
    parts: list[str] = []
    before, after = old.to_document(), new.to_document()
    for key in ("description", "timezone", "notify_handoff"):
        if before[key] != after[key]:
            parts.append(f"{key} {before[key]!r} → {after[key]!r}" if key == "description" else f"{key} {before[key]} → {after[key]}")
    old_rotations = {r.name: r for r in old.rotations}
    new_rotations = {r.name: r for r in new.rotations}
    parts += [f"rotation {n} added" for n in new_rotations if n not in old_rotations]
    parts += [f"rotation {n} removed" for n in old_rotations if n not in new_rotations]
    for name, rotation in new_rotations.items():
        if (previous := old_rotations.get(name)) is None:
            continue
        if previous.contacts != rotation.contacts:
            parts.append(f"{name} contacts {','.join(previous.contacts)} → {','.join(rotation.contacts)}")
        for key in ("shift", "start"):
            if getattr(previous, key) != getattr(rotation, key):
                parts.append(f"{name} {key} {getattr(previous, key)} → {getattr(rotation, key)}")
        if previous.active != rotation.active:
            parts.append(f"{name} active windows changed")
    return "; ".join(parts) or "no change"


# ---------------------------------------------------------------------------------------------
# The CLI's words for time (SPEC §10): WHEN, spans, gaps and hand-overs. Pure: `now` is an argument.

_SPAN_RE = re.compile(r"(?:(\d{1,4})w)?(?:(\d{1,4})d)?(?:(\d{1,5})h)?(?:(\d{1,6})m)?")
_HHMM_RE = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")
MAX_SPAN = timedelta(days=366)
MAX_REACH = timedelta(days=3653)  # how far from now a WHEN may be


def parse_when(text: str, timezone: str, now: datetime, field: str = "--at") -> datetime:
    """`now`; an ISO 8601 date-time (without an offset: wall-clock time in `timezone`, resolved as
    schedules are, escalator.oncall.resolve); or `HH:MM`, the next such wall-clock time after `now`."""
    zone = ZoneInfo(timezone)
    value = text.strip()
    if value.lower() == "now":
        return now
    if (match := _HHMM_RE.fullmatch(value)) is not None:
        today = oncall.local(now, zone).date()
        for day in (today, today + timedelta(days=1), today + timedelta(days=2)):
            moment = oncall.resolve(datetime.combine(day, time(int(match.group(1)), int(match.group(2)))), zone)
            if moment > now:
                return moment
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            Problem(f"{text!r} is not a time: write now, HH:MM, or a date-time like 2026-12-05T03:00", field=field)
        ) from None
    if abs(parsed.replace(tzinfo=None) - oncall.local(now, zone)) > MAX_REACH:  # far years overflow the arithmetic
        raise InvalidInput(Problem(f"{text!r} is more than 10 years away", field=field))
    if parsed.tzinfo is None:
        return oncall.resolve(parsed, zone)
    return parsed.astimezone(UTC)


def parse_span(text: str, field: str = "--for") -> timedelta:
    """`12h`, `30m`, `2d`, `1w`, `1d12h`: up to a year."""
    match = _SPAN_RE.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        raise InvalidInput(Problem(f"{text!r} is not a length of time: write it like 12h, 30m, 2d or 1d12h", field=field))
    w, d, h, m = (int(g) if g else 0 for g in match.groups())
    span = timedelta(weeks=w, days=d, hours=h, minutes=m)
    if not timedelta(0) < span <= MAX_SPAN:
        raise InvalidInput(Problem(f"{text!r} is out of range: from 1m to 366d", field=field))
    return span


def _stamp(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M")


def describe_span(start: datetime, end: datetime, timezone: str) -> str:
    """`Sat 2026-12-05 00:00 – 08:00 CST` (the end's date too when it is another day)."""
    zone = ZoneInfo(timezone)
    first, last = start.astimezone(zone), end.astimezone(zone)
    if last.date() == first.date():
        end_text = last.strftime("%H:%M")
    elif last.time() == time(0) and last.date() == first.date() + timedelta(days=1):
        end_text = "24:00"
    else:
        end_text = _stamp(end, zone)
    if first.tzname() != last.tzname():  # across a DST change: each end in its own offset
        return f"{_stamp(start, zone)} {first.tzname()} – {end_text} {last.tzname()}"
    return f"{_stamp(start, zone)} – {end_text} {last.tzname()}"


def gap_warnings(
    schedule: oncall.Schedule, overrides: Sequence[oncall.Override], now: datetime, days: int = 28
) -> list[str]:
    """SPEC §10's words for every stretch of the next `days` days with nobody on call."""
    return [
        f"warning: schedule {schedule.id} has nobody on call {describe_span(start, end, schedule.timezone)}"
        for start, end in oncall.gaps(schedule, overrides, now, now + timedelta(days=days))
    ]


def handoff_text(schedule: str, start: datetime, until: datetime, timezone: str) -> str:
    """The hand-over notice: `You are on call for techs from Mon 18:00 until Tue 08:00 CST.`"""
    zone = ZoneInfo(timezone)
    begin, end = start.astimezone(zone), until.astimezone(zone)
    far = until - start >= timedelta(days=6)  # a week's turn: name the dates, not only the days
    fmt = "%a %b %d %H:%M" if far else "%a %H:%M"
    return f"You are on call for {schedule} from {begin.strftime(fmt)} until {end.strftime(fmt)} {end.tzname()}."
