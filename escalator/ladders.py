"""Ladders and contacts as validated plain values (SPEC §2).

These models are the single definition of a valid ladder: the YAML files, the CLI's in-place
edits and the database snapshots all pass through them, so a rule lives in exactly one place.
Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from escalator.errors import InvalidInput, Problem

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# E.164: a plus, a non-zero country-code digit, 8 to 15 digits in all.
E164_RE = re.compile(r"\+[1-9][0-9]{7,14}")
CHANNELS: tuple[str, ...] = ("voice", "sms", "push")
PHONE_CHANNELS = frozenset({"voice", "sms"})
MIN_WINDOW_S, MAX_WINDOW_S = 5, 3600
DEFAULT_WINDOW_S = 120
MAX_LEGS = 50
MAX_CONTACTS_PER_LEG = 50
MAX_SCHEDULES_PER_LEG = 10
MAX_CYCLES = 1000
MIN_ACK_EXPIRY_S, MAX_ACK_EXPIRY_S = 300, 86_400

_DURATION_RE = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _identifier(value: Any) -> Any:
    if isinstance(value, str) and not NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "identifier",
            "{value} is not a valid id: use 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit",
            {"value": repr(value)},
        )
    return value


def parse_duration(value: Any) -> int:
    """`90s`, `2m`, `1h`, `1m30s` or integer seconds → seconds, within 5 s..1 h."""
    seconds = duration_seconds(value)
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise PydanticCustomError(
            "duration_range",
            "{value} is out of range: a window must be between 5s and 1h",
            {"value": repr(value)},
        )
    return seconds


def parse_ack_expiry(value: Any) -> int:
    """`ack_expires` (SPEC §11): a duration within 5 m..24 h."""
    seconds = duration_seconds(value)
    if not MIN_ACK_EXPIRY_S <= seconds <= MAX_ACK_EXPIRY_S:
        raise PydanticCustomError(
            "duration_range",
            "{value} is out of range: ack_expires must be between 5m and 24h",
            {"value": repr(value)},
        )
    return seconds


def duration_seconds(value: Any) -> int:
    """`90s`, `2m`, `1h`, `1m30s` or integer seconds → seconds (no range: the caller checks it)."""
    seconds: int | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            seconds = int(text)
        else:
            m = _DURATION_RE.fullmatch(text)
            if m and text:
                h, mi, s = (int(g) if g else 0 for g in m.groups())
                seconds = h * 3600 + mi * 60 + s
    if seconds is None:
        raise PydanticCustomError(
            "duration",
            "{value} is not a duration: write it like 90s, 2m, 1h or a number of seconds",
            {"value": repr(value)},
        )
    return seconds


def format_duration(seconds: int) -> str:
    """The one spelling written back out: whole seconds, so export is stable and obvious."""
    return f"{seconds}s"


def _phone(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise PydanticCustomError(
            "phone_type",
            'phone must be a quoted string in E.164 form, like "+14155550101" (got the number {value})',
            {"value": repr(value)},
        )
    if isinstance(value, str) and not E164_RE.fullmatch(value):
        raise PydanticCustomError(
            "phone",
            '{value} is not an E.164 phone number: write it like "+14155550101"',
            {"value": repr(value)},
        )
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError(
            "timezone", "{value} is not an IANA time zone name (like America/Chicago)", {"value": repr(value)}
        ) from None
    return value


def _unique(items: Sequence[str], what: str, key: str | None = None) -> None:
    """Refuse a repeated item. The error names the repeat itself, not the list: its index (and
    `key` within it) go in the context as `at`, which `validation_errors` appends to the location
    (a duplicate leg name is `legs[1].name`, on that leg's line)."""
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item in seen:
            at = (index,) if key is None else (index, key)
            raise PydanticCustomError("duplicate", "{what} {item} is listed twice", {"what": what, "item": repr(item), "at": at})
        seen.add(item)


Identifier = Annotated[str, BeforeValidator(_identifier)]
Duration = Annotated[int, BeforeValidator(parse_duration)]
AckExpiry = Annotated[int, BeforeValidator(parse_ack_expiry)]
Phone = Annotated[str, BeforeValidator(_phone)]
Channel = Literal["voice", "sms", "push"]
TimeZoneName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_timezone)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, populate_by_name=True)


class Contact(_Strict):
    """A person who can be paged."""

    id: Identifier
    name: str = Field(min_length=1, max_length=100)
    phone: Phone | None = None
    push_tokens: tuple[Annotated[str, Field(min_length=1, max_length=4096)], ...] = Field(default=(), max_length=20)

    @field_validator("push_tokens")
    @classmethod
    def _distinct_tokens(cls, tokens: tuple[str, ...]) -> tuple[str, ...]:
        _unique(tokens, "push token")
        return tokens

    @model_validator(mode="after")
    def _reachable(self) -> Contact:
        if self.phone is None and not self.push_tokens:
            raise PydanticCustomError("unreachable", "a contact needs a phone, push_tokens, or both")
        return self

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.phone is not None:
            doc["phone"] = self.phone
        if self.push_tokens:
            doc["push_tokens"] = list(self.push_tokens)
        return doc


def _one_or_list(value: Any) -> Any:
    """`schedule: techs` or `schedule: [techs, backup]`."""
    return (value,) if isinstance(value, str) else value


class Leg(_Strict):
    """One rung of the ladder: who is paged together, how, and for how long. `contacts` are fixed
    people; `schedule` names schedules whose on-call people join them when the leg starts (§10)."""

    name: Identifier
    contacts: tuple[Identifier, ...] = Field(default=(), max_length=MAX_CONTACTS_PER_LEG)
    schedules: Annotated[tuple[Identifier, ...], BeforeValidator(_one_or_list)] = Field(
        default=(), alias="schedule", max_length=MAX_SCHEDULES_PER_LEG
    )
    channels: tuple[Channel, ...] = Field(default=CHANNELS, min_length=1)
    ack_timeout: Duration | None = None

    @field_validator("contacts")
    @classmethod
    def _distinct_contacts(cls, contacts: tuple[str, ...]) -> tuple[str, ...]:
        _unique(contacts, "contact")
        return contacts

    @field_validator("schedules")
    @classmethod
    def _distinct_schedules(cls, schedules: tuple[str, ...]) -> tuple[str, ...]:
        _unique(schedules, "schedule")
        return schedules

    @model_validator(mode="after")
    def _somebody(self) -> Leg:
        if not self.contacts and not self.schedules:
            given = "contacts" in self.model_fields_set
            raise PydanticCustomError(
                "nobody", "{what}: a leg needs contacts:, schedule:, or both",
                {"what": "must not be empty" if given else "is required", "at": ("contacts",)},
            )
        return self

    @field_validator("channels")
    @classmethod
    def _distinct_channels(cls, channels: tuple[str, ...]) -> tuple[str, ...]:
        _unique(channels, "channel")
        return channels

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name}
        if self.schedules:
            doc["schedule"] = self.schedules[0] if len(self.schedules) == 1 else list(self.schedules)
        if self.contacts or not self.schedules:
            doc["contacts"] = list(self.contacts)
        doc["channels"] = list(self.channels)
        if self.ack_timeout is not None:
            doc["ack_timeout"] = format_duration(self.ack_timeout)
        return doc


class Ladder(_Strict):
    """An on-call ladder: legs walked in order, each with its acknowledgment window."""

    name: Identifier = Field(alias="ladder")
    description: str = Field(default="", max_length=500)
    timezone: TimeZoneName = "UTC"
    ack_timeout: Duration = DEFAULT_WINDOW_S
    cycles: int = Field(default=0, ge=0, le=MAX_CYCLES, strict=True)
    ack_expires: AckExpiry | None = None  # SPEC §11: off unless set
    connect_caller: bool = Field(default=True, strict=True)  # SPEC §11
    legs: tuple[Leg, ...] = Field(min_length=1, max_length=MAX_LEGS)

    @field_validator("legs")
    @classmethod
    def _distinct_legs(cls, legs: tuple[Leg, ...]) -> tuple[Leg, ...]:
        _unique([leg.name for leg in legs], "leg name", key="name")
        return legs

    def window(self, leg_index: int) -> int:
        """The acknowledgment window of a leg, in seconds."""
        own = self.legs[leg_index].ack_timeout
        return self.ack_timeout if own is None else own

    def leg_index(self, leg_name: str) -> int:
        for i, leg in enumerate(self.legs):
            if leg.name == leg_name:
                return i
        raise InvalidInput(Problem(f"ladder {self.name!r} has no leg {leg_name!r}", field="leg"))

    def contact_ids(self) -> set[str]:
        return {c for leg in self.legs for c in leg.contacts}

    def schedule_ids(self) -> set[str]:
        return {s for leg in self.legs for s in leg.schedules}

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "ladder": self.name,
            "description": self.description,
            "timezone": self.timezone,
            "ack_timeout": format_duration(self.ack_timeout),
            "cycles": self.cycles,
        }
        if self.ack_expires is not None:  # written only when set: older exports stay byte-identical
            doc["ack_expires"] = format_duration(self.ack_expires)
        if not self.connect_caller:
            doc["connect_caller"] = False
        doc["legs"] = [leg.to_document() for leg in self.legs]
        return doc


# ---------------------------------------------------------------------------------------------
# Cross-references: a ladder against the contacts it names.


def reference_problems(
    ladder: Ladder, contacts: Mapping[str, Contact], schedules: Mapping[str, Collection[str]] | None = None
) -> list[tuple[tuple[Any, ...], str]]:
    """Problems of a ladder's references, as (location in the ladder document, message): its
    contacts, and when `schedules` (schedule id → the contacts its rotations name) is given, its
    schedules and the people on them, who must suit every leg that pages the schedule."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    for i, leg in enumerate(ladder.legs):
        for j, contact_id in enumerate(leg.contacts):
            if (message := unsuited(contacts, contact_id, leg)) is not None:
                problems.append((("legs", i, "contacts", j), message))
        if schedules is None:
            continue
        for j, schedule_id in enumerate(leg.schedules):
            loc = ("legs", i, "schedule") + ((j,) if len(leg.schedules) > 1 else ())
            if schedule_id not in schedules:
                problems.append((loc, f"unknown schedule {schedule_id!r} (leg {leg.name!r})"))
                continue
            for contact_id in sorted(schedules[schedule_id]):
                if (message := unsuited(contacts, contact_id, leg)) is not None:
                    problems.append((loc, f"{message}, on schedule {schedule_id!r}"))
    return problems


def opted_out_warnings(
    ladder: Ladder, contacts: Mapping[str, Contact], schedules: Mapping[str, Collection[str]], opted_out: Collection[str]
) -> list[str]:
    """Legs that rely on the SMS of a number that opted out (SPEC §11): those texts will fail until
    the number texts START. `schedules`: schedule id → the contacts its rotations name."""
    lines = []
    for leg in ladder.legs:
        if "sms" not in leg.channels:
            continue
        people = list(leg.contacts) + [c for s in leg.schedules for c in sorted(schedules.get(s, ()))]
        for contact_id in dict.fromkeys(people):
            contact = contacts.get(contact_id)
            if contact is not None and contact.phone in opted_out:
                lines.append(
                    f"warning: ladder {ladder.name!r} leg {leg.name!r} texts {contact_id}, but {contact.phone} opted out of "
                    f"SMS (STOP): those texts fail until the number texts START"
                )
    return lines


def unsuited(contacts: Mapping[str, Contact], contact_id: str, leg: Leg) -> str | None:
    """Why a contact cannot be on a leg (unknown, or lacking the phone or token its channels need)."""
    contact = contacts.get(contact_id)
    needs_phone = sorted(PHONE_CHANNELS.intersection(leg.channels))
    if contact is None:
        return f"unknown contact {contact_id!r} (leg {leg.name!r})"
    if needs_phone and contact.phone is None:
        return f"contact {contact_id!r} has no phone, which leg {leg.name!r} needs for {', '.join(needs_phone)}"
    if leg.channels == ("push",) and not contact.push_tokens:
        return f"contact {contact_id!r} has no push_tokens and leg {leg.name!r} only pushes"
    return None


# ---------------------------------------------------------------------------------------------
# Validation errors → problems.


def format_loc(loc: Iterable[Any]) -> str:
    """('legs', 1, 'contacts', 0) → 'legs[1].contacts[0]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "is required",
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "tuple_type": "must be a list",
    "list_type": "must be a list",
    "model_type": "must be a mapping of keys to values",
    "dict_type": "must be a mapping of keys to values",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
}


def error_message(error: Mapping[str, Any]) -> str:
    """pydantic's error in words an operator reads at 3 AM."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind in ("too_short", "string_too_short"):
        return "must not be empty" if ctx.get("min_length") == 1 else f"needs at least {ctx.get('min_length')} items"
    if kind in ("too_long", "string_too_long"):
        unit = "characters" if isinstance(error.get("input"), str) else "items"
        return f"must be at most {ctx.get('max_length')} {unit}"
    if kind == "literal_error":
        return f"{error.get('input')!r} is not one of {ctx.get('expected')}"
    if kind in _MESSAGES:
        try:
            return _MESSAGES[kind].format(**ctx)
        except (KeyError, IndexError):
            pass
    msg = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):  # pydantic's prefix on validator errors
        msg = msg.removeprefix(prefix)
    return msg


def validation_errors(exc: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    """A pydantic error as (location, message) pairs, locations in document terms."""
    found = []
    for err in exc.errors(include_url=False):
        # Literal/Annotated validators add the type name to the location; drop those parts.
        loc = tuple(p for p in err["loc"] if isinstance(p, int) or not str(p).startswith(("function-", "literal[")))
        loc += tuple((err.get("ctx") or {}).get("at", ()))  # an item of the list, not the list (_unique)
        found.append((loc, err))
    out = []
    for loc, err in found:
        # A list whose items failed also reports it is "too short": the item errors say it better.
        if err["type"] == "too_short" and any(len(other) > len(loc) and other[: len(loc)] == loc for other, _ in found):
            continue
        out.append((loc, error_message(err)))
    return out


def validate_value(kind: Any, raw: Any, field: str) -> Any:
    """Validate one CLI option with the same rules as the files; refusals name the option."""
    try:
        return TypeAdapter(kind).validate_python(raw)
    except ValidationError as exc:
        raise InvalidInput([Problem(msg, field=field) for _, msg in validation_errors(exc)]) from None


def build_ladder(document: Mapping[str, Any], field_prefix: str = "") -> Ladder:
    """A ladder from a plain document; refusals name the field."""
    try:
        return Ladder.model_validate(document)
    except ValidationError as exc:
        raise InvalidInput(
            [Problem(msg, field=field_prefix + format_loc(loc)) for loc, msg in validation_errors(exc)]
        ) from None


def build_contact(document: Mapping[str, Any]) -> Contact:
    try:
        return Contact.model_validate(document)
    except ValidationError as exc:
        raise InvalidInput([Problem(msg, field=format_loc(loc) or None) for loc, msg in validation_errors(exc)]) from None


# ---------------------------------------------------------------------------------------------
# In-place edits (the CLI's add-leg, set-leg, swap ...). Each returns a new, fully revalidated ladder.


def _with_legs(ladder: Ladder, legs: list[dict[str, Any]]) -> Ladder:
    doc = ladder.to_document()
    doc["legs"] = legs
    return build_ladder(doc)


def add_leg(ladder: Ladder, leg: Mapping[str, Any], position: int | None = None) -> Ladder:
    """Insert a leg at a 0-based position (default: last)."""
    legs = [leg_.to_document() for leg_ in ladder.legs]
    if any(existing["name"] == leg.get("name") for existing in legs):
        raise InvalidInput(Problem(f"ladder {ladder.name!r} already has a leg {leg.get('name')!r}", field="leg"))
    position = len(legs) if position is None else position
    if not 0 <= position <= len(legs):
        raise InvalidInput(Problem(f"position must be between 1 and {len(legs) + 1}", field="--position"))
    legs.insert(position, dict(leg))
    return _with_legs(ladder, legs)


def remove_leg(ladder: Ladder, leg_name: str) -> Ladder:
    index = ladder.leg_index(leg_name)
    if len(ladder.legs) == 1:
        raise InvalidInput(Problem(f"{leg_name!r} is the only leg of {ladder.name!r}: a ladder needs one", field="leg"))
    legs = [leg.to_document() for i, leg in enumerate(ladder.legs) if i != index]
    return _with_legs(ladder, legs)


def move_leg(ladder: Ladder, leg_name: str, position: int) -> Ladder:
    """Move a leg to a 0-based position."""
    index = ladder.leg_index(leg_name)
    if not 0 <= position < len(ladder.legs):
        raise InvalidInput(Problem(f"position must be between 1 and {len(ladder.legs)}", field="--position"))
    legs = [leg.to_document() for leg in ladder.legs]
    legs.insert(position, legs.pop(index))
    return _with_legs(ladder, legs)


def set_leg(ladder: Ladder, leg_name: str, **changes: Any) -> Ladder:
    """Change a leg's fields (name, contacts, schedule, channels, ack_timeout); ack_timeout None = ladder
    default, schedule () = none."""
    index = ladder.leg_index(leg_name)
    legs = [leg.to_document() for leg in ladder.legs]
    for key, value in changes.items():
        if key == "ack_timeout" and value is None:
            legs[index].pop("ack_timeout", None)
        elif key == "schedule" and not value:
            legs[index].pop("schedule", None)
        else:
            legs[index][key] = list(value) if isinstance(value, tuple) else value
    return _with_legs(ladder, legs)


def swap_contacts(ladder: Ladder, leg_a: str, leg_b: str) -> Ladder:
    """Exchange the contacts of two legs: the weekly hand-over."""
    a, b = ladder.leg_index(leg_a), ladder.leg_index(leg_b)
    if a == b:
        raise InvalidInput(Problem("name two different legs to swap", field="leg"))
    legs = [leg.to_document() for leg in ladder.legs]
    legs[a]["contacts"], legs[b]["contacts"] = legs[b].get("contacts", []), legs[a].get("contacts", [])
    return _with_legs(ladder, legs)


def set_fields(ladder: Ladder, **changes: Any) -> Ladder:
    """Change ladder-wide fields (description, timezone, ack_timeout, cycles, ack_expires (None: off),
    connect_caller)."""
    doc = ladder.to_document()
    for key, value in changes.items():
        if key == "ack_expires" and value is None:
            doc.pop("ack_expires", None)
        else:
            doc[key] = format_duration(value) if key in ("ack_timeout", "ack_expires") else value
    return build_ladder(doc)


# ---------------------------------------------------------------------------------------------
# A one-line account of what changed between two versions, for the history.


_UNSET = {"description": "", "timezone": "UTC", "ack_timeout": "", "cycles": 0, "ack_expires": "off", "connect_caller": True}


def describe_change(old: Ladder | None, new: Ladder | None) -> str:
    if old is None and new is None:
        return "no change"
    if old is None:
        return f"created with {len(new.legs)} legs" if new else "created"
    if new is None:
        return "deleted"
    parts: list[str] = []
    for key in ("description", "timezone", "ack_timeout", "cycles", "ack_expires", "connect_caller"):
        before, after = old.to_document().get(key, _UNSET[key]), new.to_document().get(key, _UNSET[key])
        if before != after:
            parts.append(f"{key} {before!r} → {after!r}" if key == "description" else f"{key} {before} → {after}")
    old_legs = {leg.name: leg for leg in old.legs}
    new_legs = {leg.name: leg for leg in new.legs}
    for name in new_legs.keys() - old_legs.keys():
        parts.append(f"leg {name} added")
    for name in old_legs.keys() - new_legs.keys():
        parts.append(f"leg {name} removed")
    for name in [leg.name for leg in new.legs if leg.name in old_legs]:
        before_leg, after_leg = old_legs[name], new_legs[name]
        if before_leg.schedules != after_leg.schedules:
            parts.append(f"{name} schedule {','.join(before_leg.schedules) or 'none'} → {','.join(after_leg.schedules) or 'none'}")
        if before_leg.contacts != after_leg.contacts:
            parts.append(f"{name} contacts {','.join(before_leg.contacts)} → {','.join(after_leg.contacts)}")
        if before_leg.channels != after_leg.channels:
            parts.append(f"{name} channels {','.join(before_leg.channels)} → {','.join(after_leg.channels)}")
        if before_leg.ack_timeout != after_leg.ack_timeout:
            fmt = lambda v: format_duration(v) if v is not None else "default"  # noqa: E731
            parts.append(f"{name} ack_timeout {fmt(before_leg.ack_timeout)} → {fmt(after_leg.ack_timeout)}")
    common_old = [leg.name for leg in old.legs if leg.name in new_legs]
    common_new = [leg.name for leg in new.legs if leg.name in old_legs]
    if common_old != common_new:
        parts.append("order " + " → ".join(leg.name for leg in new.legs))
    return "; ".join(parts) or "no change"
