"""Inbound NATS messages (SPEC §3), validated into plain values or refused with a reason.

Unknown keys are ignored rather than refused: an urgent call must not be dropped because a
publisher added a field. Everything else that is wrong is refused with a reason naming the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from escalator.ladders import E164_RE, duration_seconds, format_loc, validation_errors

MAX_MESSAGE_BYTES = 64 * 1024
MAX_DETAILS_BYTES = 16 * 1024
MAX_DEPTH = 32  # objects and arrays nested in each other, the body itself counting as 1
MAX_NUMBER_CHARS = 64  # a number's literal, sign and exponent included
INCIDENT_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# A heartbeat's source: an id as for incidents, but at most 100 characters, so that the incident its
# silence opens, `heartbeat:<source>:<unix seconds>`, is itself a valid id (128 at most).
HEARTBEAT_SOURCE_RE = re.compile(r"[A-Za-z0-9._:-]{1,100}")
MIN_HEARTBEAT_S, MAX_HEARTBEAT_S, DEFAULT_HEARTBEAT_S = 10, 3600, 60
# Newlines and tabs in a summary become spaces; other control characters are refused.
_SPACES = re.compile(r"[ ]*[\t\n\r\v\f]+[ ]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _incident_id(value: Any) -> Any:
    if isinstance(value, str) and not INCIDENT_ID_RE.fullmatch(value):
        raise PydanticCustomError("incident_id", "must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    return value


def _text(value: Any) -> Any:
    if isinstance(value, str):
        value = _SPACES.sub(" ", value).strip()
        if _CONTROL.search(value):
            raise PydanticCustomError("control", "contains control characters")
    return value


def _phone(value: Any) -> Any:
    if isinstance(value, str) and not E164_RE.fullmatch(value):
        raise PydanticCustomError("phone", "must be an E.164 phone number like +14155550101")
    return value


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:  # built in code, not parsed from JSON
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("rfc3339", "must be an RFC 3339 timestamp string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise PydanticCustomError("rfc3339", "must be an RFC 3339 timestamp like 2026-11-22T03:00:00Z") from None
    if parsed.tzinfo is None:
        raise PydanticCustomError("rfc3339", "needs a time zone offset (e.g. Z or -06:00)")
    return parsed


def _details(value: Any) -> Any:
    if value is not None:
        if not isinstance(value, dict):
            raise PydanticCustomError("details", "must be a JSON object")
        if len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode()) > MAX_DETAILS_BYTES:
            raise PydanticCustomError("details", "must be at most 16 KiB")
    return value


def _heartbeat_source(value: Any) -> Any:
    if isinstance(value, str) and not HEARTBEAT_SOURCE_RE.fullmatch(value):
        raise PydanticCustomError("source", "must be 1-100 characters of A-Z a-z 0-9 . _ : -")
    return value


def _heartbeat_interval(value: Any) -> Any:
    try:
        seconds = duration_seconds(value)
    except PydanticCustomError:
        raise PydanticCustomError("interval", 'must be a duration like "60s", "5m" or a number of seconds') from None
    if not MIN_HEARTBEAT_S <= seconds <= MAX_HEARTBEAT_S:
        raise PydanticCustomError("interval", "must be between 10s and 1h")
    return seconds


IncidentId = Annotated[str, BeforeValidator(_incident_id)]
Text = Annotated[str, BeforeValidator(_text)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class Urgent(_Message):
    id: IncidentId
    ladder: Annotated[str, Field(min_length=1, max_length=200)]
    summary: Annotated[Text, Field(min_length=1, max_length=280)]
    caller: Annotated[str, BeforeValidator(_phone)] | None = None
    severity: Annotated[Text, Field(max_length=32)] | None = None
    occurred_at: Annotated[datetime, BeforeValidator(_rfc3339)] | None = None
    details: Annotated[dict[str, Any], BeforeValidator(_details)] | None = None


class Ack(_Message):
    id: IncidentId
    by: Annotated[Text, Field(min_length=1, max_length=64)]


class PassOn(_Message):
    id: IncidentId
    by: Annotated[Text, Field(min_length=1, max_length=64)]


class Resolve(_Message):
    id: IncidentId
    by: Annotated[Text, Field(min_length=1, max_length=64)] | None = None


class Heartbeat(_Message):
    """The publisher is alive (SPEC §11)."""

    source: Annotated[str, BeforeValidator(_heartbeat_source)]
    interval: Annotated[int, BeforeValidator(_heartbeat_interval)] = DEFAULT_HEARTBEAT_S

    @property
    def id(self) -> str:
        """Ingest handles one source's heartbeats in order, like one incident's messages."""
        return f"heartbeat:{self.source}"


KINDS: dict[str, type[_Message]] = {
    "incidents.urgent": Urgent,
    "incidents.ack": Ack,
    "incidents.pass": PassOn,
    "incidents.resolve": Resolve,
    "incidents.heartbeat": Heartbeat,
}


@dataclass(frozen=True)
class BadMessage(Exception):
    reason: str
    incident_id: str | None = None

    def __str__(self) -> str:
        return self.reason


def _number(literal: str, convert: Callable[[str], Any]) -> Any:
    # Before conversion: Python refuses (ValueError) integers over 4,300 digits, and a float
    # literal like 1e999 becomes infinity.
    if len(literal) > MAX_NUMBER_CHARS:
        raise BadMessage(f"a number is {len(literal)} characters long; the limit is {MAX_NUMBER_CHARS}")
    value = convert(literal)
    if isinstance(value, float) and not math.isfinite(value):
        raise BadMessage(f"number {literal} is out of range")
    return value


def _constant(name: str) -> Any:
    raise BadMessage(f"{name} is not a JSON number")


def _depth(body: Any) -> int:
    """How deeply objects and arrays nest (iterative: a deep body cannot exhaust the stack here)."""
    deepest, stack = 0, [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


Inbound = Urgent | Ack | PassOn | Resolve | Heartbeat


def parse(subject: str, data: bytes) -> Inbound:
    """A message body → its validated value, or BadMessage with the reason (and the id if it was valid).

    Total: whatever the bytes are, the result is a value or BadMessage, never another exception
    (SPEC §3: no message, however built, may stop ingest)."""
    try:
        return _parse(subject, data)
    except BadMessage:
        raise
    except RecursionError:  # the C decoder recurses per level and gives up near 1,000
        raise BadMessage(f"JSON is nested deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:  # a parser choked in a way nobody foresaw: refuse the message, keep going
        raise BadMessage(f"message could not be parsed ({type(exc).__name__})") from None


def _parse(subject: str, data: bytes) -> Inbound:
    kind = KINDS.get(subject)
    if kind is None:
        raise BadMessage(f"unknown subject {subject[:200]!r} (expected one of {', '.join(KINDS)})")
    if len(data) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"message is {len(data)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        body = json.loads(
            data.decode("utf-8"),
            parse_int=lambda s: _number(s, int), parse_float=lambda s: _number(s, float), parse_constant=_constant,
        )
    except UnicodeDecodeError:
        raise BadMessage("body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise BadMessage(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if _depth(body) > MAX_DEPTH:
        raise BadMessage(f"JSON is nested deeper than {MAX_DEPTH} levels")
    if not isinstance(body, dict):
        raise BadMessage("body must be a JSON object")
    raw_id = body.get("id")
    incident_id = raw_id if isinstance(raw_id, str) and INCIDENT_ID_RE.fullmatch(raw_id) else None
    try:
        return kind.model_validate(body)
    except ValidationError as exc:
        reasons = [f"{format_loc(loc) or 'body'}: {msg}" for loc, msg in validation_errors(exc)]
        raise BadMessage("; ".join(reasons), incident_id) from None


def encode(message: BaseModel) -> bytes:
    """The JSON a publisher sends (used by `escalator publish` and the incident commands)."""
    return message.model_dump_json(exclude_none=True).encode()
