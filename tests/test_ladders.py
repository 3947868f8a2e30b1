"""The ladder model and its pure edits, on plain values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from escalator.errors import InvalidInput
from escalator.ladders import (
    Ladder,
    add_leg,
    describe_change,
    format_duration,
    move_leg,
    parse_duration,
    remove_leg,
    set_fields,
    set_leg,
    swap_contacts,
)


def ladder(**extra) -> Ladder:
    doc = {
        "ladder": "night",
        "legs": [
            {"name": "primary", "contacts": ["alice"]},
            {"name": "secondary", "contacts": ["bob"], "ack_timeout": "90s"},
            {"name": "fallback", "contacts": ["carol", "dave"], "channels": ["voice"]},
        ],
    }
    doc.update(extra)
    return Ladder.model_validate(doc)


@pytest.mark.parametrize(
    "raw, seconds",
    [("90s", 90), ("2m", 120), ("1h", 3600), ("1m30s", 90), (120, 120), ("120", 120), (" 45s ", 45), (5, 5), ("60m", 3600)],
)
def test_durations(raw, seconds) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["4s", 3601, "2h", "0", "", "s", "1d", "1.5m", True, None, [60], "-5s", "5 s"])
def test_bad_durations(raw) -> None:
    with pytest.raises(Exception):
        parse_duration(raw)


def test_defaults_and_windows() -> None:
    lad = ladder()
    assert lad.ack_timeout == 120 and lad.cycles == 0 and lad.timezone == "UTC"
    assert [lad.window(i) for i in range(3)] == [120, 90, 120]
    assert lad.legs[0].channels == ("voice", "sms", "push")
    assert format_duration(lad.window(1)) == "90s"
    assert Ladder.model_validate(lad.to_document()) == lad


def test_cycles_must_be_an_integer_not_text() -> None:
    with pytest.raises(ValidationError):
        ladder(cycles="2")
    with pytest.raises(ValidationError):
        ladder(cycles=True)


def test_add_leg_positions() -> None:
    lad = add_leg(ladder(), {"name": "manager", "contacts": ["erin"]}, 1)
    assert [leg.name for leg in lad.legs] == ["primary", "manager", "secondary", "fallback"]
    lad = add_leg(ladder(), {"name": "manager", "contacts": ["erin"]})
    assert lad.legs[-1].name == "manager"
    with pytest.raises(InvalidInput, match="already has a leg 'primary'"):
        add_leg(ladder(), {"name": "primary", "contacts": ["erin"]})
    with pytest.raises(InvalidInput, match="position must be between 1 and 4"):
        add_leg(ladder(), {"name": "x", "contacts": ["erin"]}, 7)
    with pytest.raises(InvalidInput) as info:
        add_leg(ladder(), {"name": "x", "contacts": []})
    assert info.value.problems[0].field == "legs[3].contacts"


def test_remove_and_move() -> None:
    assert [leg.name for leg in remove_leg(ladder(), "secondary").legs] == ["primary", "fallback"]
    with pytest.raises(InvalidInput, match="no leg 'nope'"):
        remove_leg(ladder(), "nope")
    single = Ladder.model_validate({"ladder": "x", "legs": [{"name": "p", "contacts": ["a"]}]})
    with pytest.raises(InvalidInput, match="only leg"):
        remove_leg(single, "p")
    assert [leg.name for leg in move_leg(ladder(), "fallback", 0).legs] == ["fallback", "primary", "secondary"]
    assert [leg.name for leg in move_leg(ladder(), "primary", 2).legs] == ["secondary", "fallback", "primary"]
    with pytest.raises(InvalidInput, match="between 1 and 3"):
        move_leg(ladder(), "primary", 3)


def test_set_leg_and_swap() -> None:
    lad = set_leg(ladder(), "secondary", contacts=("erin",), ack_timeout=None, channels=("sms",))
    assert lad.legs[1].contacts == ("erin",) and lad.legs[1].ack_timeout is None and lad.legs[1].channels == ("sms",)
    renamed = set_leg(ladder(), "secondary", name="backup")
    assert renamed.legs[1].name == "backup" and renamed.legs[1].contacts == ("bob",)
    swapped = swap_contacts(ladder(), "primary", "fallback")
    assert swapped.legs[0].contacts == ("carol", "dave") and swapped.legs[2].contacts == ("alice",)
    assert swapped.legs[2].channels == ("voice",)  # only contacts move; each leg keeps its channels
    with pytest.raises(InvalidInput, match="two different legs"):
        swap_contacts(ladder(), "primary", "primary")


def test_set_fields_revalidates() -> None:
    lad = set_fields(ladder(), ack_timeout=300, cycles=2, timezone="Europe/Oslo", description="d")
    assert (lad.ack_timeout, lad.cycles, lad.timezone, lad.description) == (300, 2, "Europe/Oslo", "d")
    with pytest.raises(InvalidInput) as info:
        set_fields(ladder(), timezone="Nowhere/Land")
    assert info.value.problems[0].field == "timezone"


def test_describe_change() -> None:
    before = ladder()
    assert describe_change(None, before) == "created with 3 legs"
    assert describe_change(before, None) == "deleted"
    assert describe_change(before, before) == "no change"
    after = set_leg(swap_contacts(before, "primary", "secondary"), "fallback", ack_timeout=60)
    text = describe_change(before, after)
    assert "primary contacts alice → bob" in text and "secondary contacts bob → alice" in text
    assert "fallback ack_timeout default → 60s" in text
    assert describe_change(before, move_leg(before, "fallback", 0)) == "order fallback → primary → secondary"
    assert "leg manager added" in describe_change(before, add_leg(before, {"name": "manager", "contacts": ["x"]}))
    assert "cycles 0 → 3" in describe_change(before, set_fields(before, cycles=3))
