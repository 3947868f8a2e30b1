"""Schedule documents (escalator/schedules.py): every refusal names its field; a document comes back
unchanged; the CLI's words for time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from escalator import oncall
from escalator.errors import InvalidInput
from escalator.ladders import validation_errors
from escalator.schedules import ScheduleDoc, describe_span, handoff_text, parse_span, parse_when

TECHS = {
    "schedule": "techs",
    "description": "Field technicians",
    "timezone": "America/Chicago",
    "notify_handoff": True,
    "rotations": [
        {"name": "nights", "contacts": ["alice", "bob", "carol"], "shift": "1w", "start": "2026-11-30 08:00",
         "active": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "18:00", "to": "08:00"},
                    {"days": ["sat", "sun"], "from": "00:00", "to": "24:00"}]},
        {"name": "office", "contacts": ["dispatch"], "shift": "1w", "start": "2026-11-30 00:00",
         "active": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "18:00"}]},
    ],
}


def refusals(document: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        ScheduleDoc.model_validate(document)
    return [(".".join(str(p) for p in loc), msg) for loc, msg in validation_errors(caught.value)]


def with_rotation(**changes) -> dict:
    rotation = {**TECHS["rotations"][0], **changes}
    return {**TECHS, "rotations": [rotation]}


def test_the_spec_example_reads_and_comes_back_unchanged() -> None:
    doc = ScheduleDoc.model_validate(TECHS)
    assert doc.to_document() == TECHS
    assert ScheduleDoc.model_validate(doc.to_document()) == doc
    assert doc.contact_ids() == {"alice", "bob", "carol", "dispatch"}


def test_the_plan_is_what_oncall_computes_with() -> None:
    plan = ScheduleDoc.model_validate(TECHS).plan()
    nights = plan.rotations[0]
    assert (nights.shift, nights.unit, nights.start) == (1, oncall.WEEKS, datetime(2026, 11, 30, 8, 0))
    assert nights.active[0] == oncall.Window(frozenset({0, 1, 2, 3, 4}), 18 * 60, 8 * 60)
    assert nights.active[1] == oncall.Window(frozenset({5, 6}), 0, 24 * 60)
    saturday_3am = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)  # 03:00 CST
    assert [p.contact for p in oncall.on_call(plan, [], saturday_3am)] == ["alice"]
    tuesday_noon = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
    assert [p.contact for p in oncall.on_call(plan, [], tuesday_noon)] == ["dispatch"]


@pytest.mark.parametrize(("document", "field", "words"), [
    ({**TECHS, "owner": "ops"}, "owner", "unknown key"),
    ({**TECHS, "schedule": "Techs!"}, "schedule", "not a valid id"),
    ({**TECHS, "timezone": "Mars/Olympus"}, "timezone", "not an IANA time zone"),
    ({**TECHS, "notify_handoff": "yes"}, "notify_handoff", "must be true or false"),
    ({**TECHS, "rotations": []}, "rotations", "must not be empty"),
    (with_rotation(contacts=[]), "rotations.0.contacts", "must not be empty"),
    (with_rotation(contacts=["alice", "alice"]), "rotations.0.contacts.1", "contact 'alice' is listed twice"),
    (with_rotation(shift="90m"), "rotations.0.shift", "'90m' is not a shift: write it like 12h, 1d or 1w"),
    (with_rotation(shift="5w"), "rotations.0.shift", "out of range: a shift is between 1h and 4w"),
    (with_rotation(shift=7), "rotations.0.shift", "not a shift"),
    (with_rotation(start="Monday 8am"), "rotations.0.start", "not a start"),
    (with_rotation(start="2026-02-30 08:00"), "rotations.0.start", "not a start"),
    (with_rotation(active=[{"days": ["mon", "funday"], "from": "18:00", "to": "08:00"}]), "rotations.0.active.0.days.1",
     "'funday' is not one of"),
    (with_rotation(active=[{"days": ["mon", "mon"], "from": "18:00", "to": "08:00"}]), "rotations.0.active.0.days.1", "listed twice"),
    (with_rotation(active=[{"days": ["mon"], "from": "25:00", "to": "08:00"}]), "rotations.0.active.0.from", "not a time of day"),
    (with_rotation(active=[{"days": ["mon"], "from": "24:00", "to": "08:00"}]), "rotations.0.active.0.from", "00:00 to 23:59"),
    (with_rotation(active=[{"days": ["mon"], "from": "18:00", "to": "8:00"}]), "rotations.0.active.0.to", "not a time of day"),
    (with_rotation(active=[{"days": ["mon"], "from": "18:00"}]), "rotations.0.active.0.to", "is required"),
    (with_rotation(active=[{"days": ["mon"], "from": "18:00", "to": "08:00", "tz": "UTC"}]), "rotations.0.active.0.tz", "unknown key"),
    ({**TECHS, "rotations": [TECHS["rotations"][0], {**TECHS["rotations"][1], "name": "nights"}]}, "rotations.1.name",
     "rotation name 'nights' is listed twice"),
])
def test_each_refusal_names_its_field(document: dict, field: str, words: str) -> None:
    found = refusals(document)
    assert any(loc == field and words in msg for loc, msg in found), found


# -- the CLI's words for time: pure functions of plain values ---------------------------------------

NOW = datetime(2026, 12, 3, 7, 30, tzinfo=UTC)  # Thu 01:30 CST


def test_when_is_now_a_date_time_in_the_schedules_zone_or_the_next_hh_mm() -> None:
    chi = "America/Chicago"
    assert parse_when("now", chi, NOW) == NOW
    assert parse_when("2026-12-05T03:00", chi, NOW) == datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    assert parse_when("2026-12-05T03:00+00:00", chi, NOW) == datetime(2026, 12, 5, 3, 0, tzinfo=UTC)
    assert parse_when("03:00", chi, NOW) == datetime(2026, 12, 3, 9, 0, tzinfo=UTC)  # later today
    assert parse_when("01:00", chi, NOW) == datetime(2026, 12, 4, 7, 0, tzinfo=UTC)  # passed: tomorrow
    # a wall-clock time in the spring-forward gap is the first instant after it; a fall-back one its first occurrence
    assert parse_when("2027-03-14T02:30", chi, NOW) == datetime(2027, 3, 14, 8, 0, tzinfo=UTC)
    assert parse_when("2026-11-01T01:30", chi, NOW) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    with pytest.raises(InvalidInput) as info:
        parse_when("tomorrow-ish", chi, NOW, "--from")
    assert info.value.problems[0].field == "--from" and "not a time" in info.value.problems[0].message


def test_spans_and_their_refusals() -> None:
    assert parse_span("12h") == timedelta(hours=12)
    assert parse_span("1d12h") == timedelta(days=1, hours=12)
    assert parse_span("1w") == timedelta(weeks=1) and parse_span("30m") == timedelta(minutes=30)
    for bad in ("", "12", "soon", "0h", "400d", "-1h"):
        with pytest.raises(InvalidInput):
            parse_span(bad)


def test_gap_and_hand_over_words() -> None:
    chi = "America/Chicago"
    sat = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)  # Sat 00:00 CST
    assert describe_span(sat, sat + timedelta(hours=8), chi) == "Sat 2026-12-05 00:00 – 08:00 CST"
    assert describe_span(sat, sat + timedelta(days=1), chi) == "Sat 2026-12-05 00:00 – 24:00 CST"
    assert describe_span(sat, sat + timedelta(days=2, hours=8), chi) == "Sat 2026-12-05 00:00 – Mon 2026-12-07 08:00 CST"
    monday = datetime(2026, 12, 8, 0, 0, tzinfo=UTC)  # Mon 18:00 CST
    assert handoff_text("techs", monday, monday + timedelta(hours=14), chi) == (
        "You are on call for techs from Mon 18:00 until Tue 08:00 CST.")
    week = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    assert handoff_text("techs", week, week + timedelta(weeks=1), chi) == (
        "You are on call for techs from Mon Dec 07 08:00 until Mon Dec 14 08:00 CST.")


def test_far_starts_are_refused_and_a_gap_across_a_dst_change_names_both_offsets() -> None:
    for start in ("0001-01-01 00:00", "9999-12-31 23:00"):
        found = refusals(with_rotation(start=start))
        assert any(loc == "rotations.0.start" and "between the years 2000 and 2100" in msg for loc, msg in found), found
    night = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # Sun 00:00 CST; 08:00 is CDT
    assert describe_span(night, datetime(2026, 3, 8, 13, 0, tzinfo=UTC), "America/Chicago") == (
        "Sun 2026-03-08 00:00 CST – 08:00 CDT")
