"""Inbound message validation on plain values (SPEC §3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from escalator import messages
from escalator.messages import BadMessage, parse


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_valid_urgent_with_everything() -> None:
    m = parse("incidents.urgent", body(
        id="call-2026:11.22_0300", ladder="after-hours", summary="  No heat,\n elderly resident ", caller="+14155550123",
        severity="high", occurred_at="2026-11-22T03:00:00Z", details={"unit": "4B", "notes": ["x"]}, extra="ignored",
    ))
    assert isinstance(m, messages.Urgent)
    assert m.summary == "No heat, elderly resident"  # newlines folded into spaces
    assert m.occurred_at == datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    assert m.details == {"unit": "4B", "notes": ["x"]}


@pytest.mark.parametrize(
    "subject, data, words, incident_id",
    [
        ("incidents.urgent", b"\xff\xfe", "not UTF-8", None),
        ("incidents.urgent", b'{"id": "a",', "invalid JSON", None),
        ("incidents.urgent", b'"just a string"', "must be a JSON object", None),
        ("incidents.urgent", body(id=5, ladder="x", summary="s"), "id: must be text", None),
        ("incidents.urgent", body(id="ok", ladder="x"), "summary: is required", "ok"),
        ("incidents.urgent", body(id="ok", ladder="x", summary="s", occurred_at="2026-11-22T03:00:00"), "time zone offset", "ok"),
        ("incidents.urgent", body(id="ok", ladder="x", summary="s", occurred_at=1700000000), "RFC 3339 timestamp string", "ok"),
        ("incidents.urgent", body(id="ok", ladder="x", summary="s", details=[1]), "details: must be a JSON object", "ok"),
        ("incidents.urgent", body(id="ok", ladder="x", summary="s", severity="s" * 33), "at most 32 characters", "ok"),
        ("incidents.urgent", body(id="ok", ladder="", summary="s"), "ladder: must not be empty", "ok"),
        ("incidents.urgent", body(id="ok", ladder="x", summary="\u001b[31mred"), "control characters", "ok"),
        ("incidents.urgent", body(id="ok/../x", ladder="x", summary="s"), "id: must be 1-128", None),
        ("incidents.ack", body(id="ok", by=""), "by: must not be empty", "ok"),
        ("incidents.ack", body(id="ok", by="b" * 65), "by: must be at most 64 characters", "ok"),
        ("incidents.resolve", body(by="x"), "id: is required", None),
        ("incidents.other", body(id="ok"), "unknown subject", None),
    ],
)
def test_refusals_name_the_field(subject, data, words, incident_id) -> None:
    with pytest.raises(BadMessage) as info:
        parse(subject, data)
    assert words in info.value.reason
    assert info.value.incident_id == incident_id


def test_size_limits() -> None:
    with pytest.raises(BadMessage, match="the limit is 65536"):
        parse("incidents.urgent", b" " * 70000)
    details = {"blob": "x" * (16 * 1024)}
    with pytest.raises(BadMessage, match="16 KiB"):
        parse("incidents.urgent", body(id="a", ladder="x", summary="s", details=details))
    ok = parse("incidents.urgent", body(id="a", ladder="x", summary="s" * 280, details={"blob": "x" * 16000}))
    assert len(ok.summary) == 280


def test_resolve_by_is_optional_and_encode_round_trips() -> None:
    assert parse("incidents.resolve", body(id="a")).by is None
    urgent = messages.Urgent(id="a", ladder="night", summary="hello", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert parse("incidents.urgent", messages.encode(urgent)) == urgent


def nested(depth: int) -> bytes:
    """An urgent message whose body nests `depth` levels in all (the body itself is level 1)."""
    inner = "1"
    for _ in range(depth - 1):
        inner = '{"a": ' + inner + "}"
    return ('{"id": "deep", "ladder": "x", "summary": "s", "details": ' + inner + "}").encode()


@pytest.mark.parametrize(
    "data, words",
    [
        (nested(33), "nested deeper than 32 levels"),
        (nested(990), "nested deeper than 32 levels"),  # 2 KB: the C decoder's RecursionError
        (b'{"id": "n", "ladder": "x", "summary": "s", "details": {"v": ' + b"9" * 4400 + b"}}", "characters long; the limit is 64"),
        (b'{"id": "n", "ladder": "x", "summary": "s", "details": {"v": ' + b"1" * 65 + b"}}", "characters long; the limit is 64"),
        (b'{"id": "n", "ladder": "x", "summary": "s", "details": {"v": 0.' + b"1" * 63 + b"}}", "characters long; the limit is 64"),
        (b'{"id": "n", "ladder": "x", "summary": "s", "details": {"v": NaN}}', "NaN is not a JSON number"),
        (b'{"id": "n", "ladder": "x", "summary": "s", "details": {"v": Infinity}}', "Infinity is not a JSON number"),
        (b'{"id": "n", "ladder": "x", "summary": "s", "details": {"v": -Infinity}}', "-Infinity is not a JSON number"),
        (b'{"id": "n", "ladder": "x", "summary": "s", "details": {"v": 1e999}}', "out of range"),
        (b"[" * 30000 + b"]" * 30000, "nested deeper than 32 levels"),
    ],
)
def test_bodies_a_parser_chokes_on_are_refused_with_a_reason(data: bytes, words: str) -> None:
    with pytest.raises(BadMessage) as info:
        parse("incidents.urgent", data)
    assert words in info.value.reason


def test_the_limits_themselves_are_accepted() -> None:
    ok = parse("incidents.urgent", nested(32))
    assert ok.id == "deep"
    number = parse("incidents.urgent", b'{"id": "n", "ladder": "x", "summary": "s", "details": {"v": ' + b"7" * 64 + b', "f": -1.5e3}}')
    assert number.details == {"v": int("7" * 64), "f": -1500.0}


def test_parse_never_raises_anything_but_bad_message() -> None:
    """Total over arbitrary bytes: whatever arrives on the subject becomes a value or a reason."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
    def check(data: bytes) -> None:
        try:
            parse("incidents.urgent", data)
        except BadMessage:
            pass

    check()
