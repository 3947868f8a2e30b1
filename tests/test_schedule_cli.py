"""Schedules through the real CLI on both databases (SPEC §10): files and their refusals, versions,
overrides, `schedule who`, `oncall` and the JSON shapes, gap warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from escalator import ladder_files
from tests.conftest import CONTACTS_YAML, REPO, Cli, write

TECHS = """\
schedule: techs
description: Field technicians
timezone: America/Chicago
rotations:
  - name: nights
    contacts: [alice, bob, carol]
    shift: 1w
    start: "2026-11-30 08:00"
    active:
      - {days: [mon, tue, wed, thu, fri], from: "18:00", to: "08:00"}
      - {days: [sat, sun], from: "08:00", to: "08:00"}
  - name: office
    contacts: [carol]
    shift: 1w
    start: "2026-11-30 08:00"
    active:
      - {days: [mon, tue, wed, thu, fri], from: "08:00", to: "18:00"}
"""

ROTA_LADDER = """\
ladder: rota
timezone: America/Chicago
legs:
  - name: primary
    schedule: techs
  - name: fallback
    contacts: [bob]
    channels: [sms]
"""


@pytest.fixture
def rota(cli: Cli, tmp_path: Path) -> Cli:
    write(tmp_path / "l/contacts.yaml", CONTACTS_YAML)
    write(tmp_path / "l/techs.yaml", TECHS)
    write(tmp_path / "l/rota.yaml", ROTA_LADDER)
    result = cli("apply", tmp_path / "l")
    assert result.exit_code == 0, result.output
    assert "schedule techs: created (v1)" in result.stdout
    return cli


def as_json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def tables(cli: Cli) -> list:
    engine = sa.create_engine(cli.env["ESCALATOR_DATABASE_URL"])
    try:
        with engine.connect() as c:
            return [c.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1, 2")).all()
                    for t in ("schedules", "schedule_versions", "ladders", "ladder_versions", "overrides")]
    finally:
        engine.dispose()


# -- who is on call, across DST, through the CLI --------------------------------------------------------


def test_who_is_on_call_next_saturday_at_3_am_and_across_dst(rota: Cli) -> None:
    found = as_json(rota("schedule", "who", "techs", "--at", "2026-12-05T03:00", "--json"))
    assert found == {
        "schedule": "techs", "at": "2026-12-05T09:00:00Z",
        "on_call": [{"contact": "alice", "rotation": "nights", "override": None, "until": "2026-12-07T14:00:00Z"}],
    }
    # weekly turns from 2026-11-30; DST starts 2027-03-14: on Monday 2027-03-15 (CDT, UTC-5) the
    # hand-over is still at 08:00 local: carol's turn (k=14) until then, alice's (k=15) after
    before = as_json(rota("schedule", "who", "techs", "--at", "2027-03-15T07:59", "--json"))
    night = as_json(rota("schedule", "who", "techs", "--at", "2027-03-15T18:00", "--json"))
    assert before["at"] == "2027-03-15T12:59:00Z" and night["at"] == "2027-03-15T23:00:00Z"
    assert [(p["contact"], p["rotation"]) for p in before["on_call"]] == [("carol", "nights")]
    assert [(p["contact"], p["rotation"]) for p in night["on_call"]] == [("alice", "nights")]
    offset = as_json(rota("schedule", "who", "techs", "--at", "2026-12-05T09:00:00+00:00", "--json"))
    assert offset["on_call"] == found["on_call"]
    bad = rota("schedule", "who", "techs", "--at", "next tuesday")
    assert bad.exit_code == 2 and "--at" in bad.output and "not a time" in bad.output
    far = rota("oncall", "--at", "0001-01-01T00:00")
    assert far.exit_code == 2 and "more than 10 years away" in far.output


def test_oncall_lists_who_each_leg_would_page_in_the_spec_shape(rota: Cli) -> None:
    night = as_json(rota("oncall", "--at", "2026-12-05T03:00", "--json"))
    assert night == {"at": "2026-12-05T09:00:00Z", "ladders": [
        {"ladder": "rota", "legs": [{"leg": "primary", "contacts": ["alice"]}, {"leg": "fallback", "contacts": ["bob"]}]},
    ]}
    office = as_json(rota("oncall", "rota", "--at", "2026-12-07T09:00", "--json"))
    assert office["ladders"][0]["legs"][0] == {"leg": "primary", "contacts": ["carol"]}
    table = rota("oncall", "--at", "2026-12-05T03:00")
    assert table.exit_code == 0 and "Alice Ng (alice)" in table.stdout and "techs" in table.stdout


# -- overrides -----------------------------------------------------------------------------------------------


def test_cover_replaces_then_an_override_of_the_override_and_removal_is_recorded(rota: Cli) -> None:
    made = rota("cover", "techs", "--by", "bob", "--from", "2026-12-05T00:00", "--for", "1d", "-m", "alice is ill")
    assert made.exit_code == 0, made.output
    first = int(made.stdout.strip())
    second = int(rota("cover", "techs", "--by", "carol", "--instead-of", "bob",
                      "--from", "2026-12-05T02:00", "--until", "2026-12-05T04:00").stdout.strip())
    assert second > first
    at = lambda t: [(p["contact"], p["override"]) for p in as_json(rota("schedule", "who", "techs", "--at", t, "--json"))["on_call"]]  # noqa: E731
    assert at("2026-12-05T01:00") == [("bob", first)]
    assert at("2026-12-05T03:00") == [("carol", second)]  # the override of the override, in creation order
    assert at("2026-12-06T01:00") == [("alice", None)]  # both over
    added = int(rota("cover", "techs", "--by", "carol", "--add", "--from", "2026-12-05T00:00", "--for", "2h").stdout)
    assert at("2026-12-05T01:00") == [("bob", first), ("carol", added)]
    listed = as_json(rota("cover", "list", "techs", "--all", "--json"))
    assert [o["id"] for o in listed] == [first, second, added]
    assert listed[0]["comment"] == "alice is ill" and listed[0]["created_by"] == "tester" and listed[0]["by"] == "bob"
    removed = rota("cover", "remove", str(second), "--actor", "ops")
    assert removed.exit_code == 0 and f"override {second} removed" in removed.stdout
    assert at("2026-12-05T03:00") == [("bob", first)]  # carol's addition ended at 02:00
    gone = [o for o in as_json(rota("cover", "list", "--all", "--json")) if o["id"] == second][0]
    assert gone["removed_by"] == "ops" and gone["removed_at"]
    assert second not in [o["id"] for o in as_json(rota("cover", "list", "--all", "--json")) if not o["removed_at"]]
    again = rota("cover", "remove", str(second))
    assert again.exit_code == 2 and "already removed" in again.output


@pytest.mark.parametrize("args, words", [
    (("cover", "nosuch", "--by", "bob", "--for", "1h"), "no schedule named 'nosuch'"),
    (("cover", "techs", "--by", "zed", "--for", "1h"), "--by: no contact named 'zed'"),
    (("cover", "techs", "--by", "bob", "--from", "2026-12-05T04:00", "--until", "2026-12-05T03:00"), "--until must be after --from"),
    (("cover", "techs", "--by", "bob"), "give --until or --for"),
    (("cover", "techs", "--by", "bob", "--for", "soon"), "is not a length of time"),
    (("cover", "techs", "--by", "bob", "--for", "1h", "--add", "--instead-of", "alice"), "not both"),
    (("cover", "techs", "--by", "bob", "--for", "1h", "-m", "x" * 501), "--comment: must be at most 500 characters"),
    (("cover", "techs", "--by", "bob", "--from", "2020-01-01T00:00", "--for", "1h"), "--until is in the past"),
    (("cover", "techs", "--by", "bob", "--from", "9999-12-31T23:00", "--for", "1h"), "--from: '9999-12-31T23:00' is more than 10 years away"),
    # dave has no phone and the rota's primary leg calls and texts (every channel by default)
    (("cover", "techs", "--by", "dave", "--for", "1h"), "contact 'dave' has no phone, which leg 'primary' needs for sms, voice"),
])
def test_each_cover_refusal_is_one_clear_line_and_writes_nothing(rota: Cli, args: tuple, words: str) -> None:
    before = tables(rota)
    result = rota(*args)
    assert result.exit_code == 2 and words in result.output, result.output
    assert tables(rota) == before


# -- versions ------------------------------------------------------------------------------------------------


def test_export_apply_round_trip_history_rollback_and_delete(rota: Cli, tmp_path: Path) -> None:
    exported = rota("schedule", "export")
    assert exported.exit_code == 0
    path = write(tmp_path / "exp/techs.yaml", exported.stdout)
    again = rota("apply", path)
    assert again.exit_code == 0 and "schedule techs: unchanged (v1)" in again.stdout
    original = write(tmp_path / "orig/techs.yaml", TECHS)
    assert ladder_files.load([path]).schedules[0][0] == ladder_files.load([original]).schedules[0][0]
    changed = write(tmp_path / "v2/techs.yaml", TECHS.replace("[alice, bob, carol]", "[bob, alice, carol]"))
    assert rota("apply", changed, "-m", "swap").exit_code == 0
    history = as_json(rota("schedule", "history", "techs", "--json"))
    assert [h["version"] for h in history] == [1, 2] and history[1]["comment"] == "swap"
    assert "nights contacts alice,bob,carol → bob,alice,carol" in history[1]["change"]
    assert as_json(rota("schedule", "who", "techs", "--at", "2026-12-05T03:00", "--json"))["on_call"][0]["contact"] == "bob"
    back = rota("schedule", "rollback", "techs")
    assert back.exit_code == 0 and "v3: rollback to v1" in back.stdout
    assert as_json(rota("schedule", "who", "techs", "--at", "2026-12-05T03:00", "--json"))["on_call"][0]["contact"] == "alice"
    before = tables(rota)
    refused = rota("schedule", "delete", "techs", "--yes")
    assert refused.exit_code == 2 and "named by ladder rota" in refused.output and tables(rota) == before
    assert rota("ladder", "delete", "rota", "--yes").exit_code == 0
    assert rota("schedule", "delete", "techs", "--yes").exit_code == 0
    assert rota("schedule", "show", "techs").exit_code == 2
    assert rota("schedule", "rollback", "techs").exit_code == 0
    assert as_json(rota("schedule", "list", "--json"))[0]["version"] == 5


def test_removing_a_contact_a_schedule_names_or_who_covers_it_is_refused(rota: Cli, tmp_path: Path) -> None:
    result = rota("contact", "remove", "carol")
    assert result.exit_code == 2 and "on schedule techs" in result.output
    edit = rota("contact", "edit", "alice", "--no-phone")
    assert edit.exit_code == 2 and "alice" in edit.output
    # erin is on no rotation, but covers techs tonight: she stays reachable until the cover is removed
    erin = rota("contact", "add", "erin", "--name", "Erin", "--phone", "+14155550105")
    assert erin.exit_code == 0, erin.output
    made = rota("cover", "techs", "--by", "erin", "--instead-of", "zoe", "--for", "12h")
    assert made.exit_code == 2 and "no contact named 'zoe'" in made.output
    made = rota("cover", "techs", "--by", "erin", "--instead-of", "bob", "--for", "12h")
    assert made.exit_code == 0
    cover_id = made.stdout.strip()
    assert "warning" not in made.stderr  # bob is on a rotation of techs
    refused = rota("contact", "remove", "erin")
    assert refused.exit_code == 2 and f"erin' covers schedule techs (override {cover_id})" in refused.output
    unreachable = rota("contact", "edit", "erin", "--no-phone", "--push-token", "tok-erin")
    assert unreachable.exit_code == 2 and "contact 'erin' has no phone" in unreachable.output
    assert rota("cover", "remove", cover_id).exit_code == 0
    assert rota("contact", "remove", "erin").exit_code == 0
    odd = rota("cover", "techs", "--by", "bob", "--instead-of", "dave", "--for", "1h")
    assert odd.exit_code == 0 and "warning: dave is on no rotation of techs" in odd.stderr


# -- file refusals: file, line and field -----------------------------------------------------------------------


FILE_CASES = {
    "unknown contact in a rotation": (TECHS.replace("[alice, bob, carol]", "[alice, zed]"), "t.yaml", 6,
                                      "rotations[0].contacts[1]", "unknown contact 'zed'"),
    "empty rotation": (TECHS.replace("[alice, bob, carol]", "[]"), "t.yaml", 6, "rotations[0].contacts", "must not be empty"),
    "bad shift": (TECHS.replace("shift: 1w", "shift: 3 days", 1), "t.yaml", 7, "rotations[0].shift", "not a shift"),
    "bad time": (TECHS.replace('from: "18:00"', 'from: "6pm"'), "t.yaml", 10, "rotations[0].active[0].from", "not a time of day"),
    "unknown day": (TECHS.replace("[sat, sun]", "[sat, sunday]"), "t.yaml", 11, "rotations[0].active[1].days[1]", "'sunday' is not one of"),
    "unknown key": (TECHS.replace("    shift: 1w\n", "    shift: 1w\n    shfit: 2w\n", 1), "t.yaml", 8, "rotations[0].shfit", "unknown key"),
    "ladder naming an unknown schedule": (ROTA_LADDER.replace("schedule: techs", "schedule: [techs, backup]"), "r.yaml", 5,
                                          "legs[0].schedule[1]", "unknown schedule 'backup'"),
    "contact without the phone a leg needs": (TECHS.replace("[alice, bob, carol]", "[alice, dave]"), "t.yaml", 4,
                                              "legs[0].schedule", "contact 'dave' has no phone"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_each_file_refusal_names_file_line_and_field(rota: Cli, tmp_path: Path, case: str) -> None:
    text, name, line, field, words = FILE_CASES[case]
    folder = tmp_path / "bad"
    write(folder / "t.yaml", TECHS)
    write(folder / "r.yaml", ROTA_LADDER)
    write(folder / name, text)
    before = tables(rota)
    result = rota("apply", folder, "--json")
    assert result.exit_code == 2, result.output
    problems = json.loads(result.stdout)["problems"]
    match = [p for p in problems if p["field"] == field and words in p["message"]]
    assert match, problems
    if case != "contact without the phone a leg needs":
        assert match[0]["file"].endswith(name) and match[0]["line"] == line, match
    assert tables(rota) == before


def test_gaps_are_warned_about_on_apply_validate_and_show(cli: Cli, tmp_path: Path) -> None:
    write(tmp_path / "l/contacts.yaml", CONTACTS_YAML)
    nights_only = TECHS[: TECHS.index("  - name: office")]
    write(tmp_path / "l/techs.yaml", nights_only)
    applied = cli("apply", tmp_path / "l")
    assert applied.exit_code == 0
    warnings = [line for line in applied.stderr.splitlines() if line.startswith("warning: schedule techs has nobody on call")]
    assert len(warnings) >= 19, applied.stderr  # every weekday's office hours in 28 days
    assert any(" 08:00 – 18:00 CST" in w for w in warnings)
    validated = cli("ladder", "validate", tmp_path / "l")
    assert validated.exit_code == 0 and validated.stderr.count("warning: schedule techs") == len(warnings)
    shown = cli("schedule", "show", "techs")
    assert shown.exit_code == 0 and "warning: schedule techs has nobody on call" in shown.stderr
    full = cli("apply", write(tmp_path / "m/techs.yaml", TECHS))
    assert full.exit_code == 0 and "warning" not in full.stderr


def test_the_reference_rota_applies_without_gaps_and_names_everyone(cli: Cli) -> None:
    result = cli("apply", REPO / "ladders")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert "schedule techs: created (v1)" in result.stdout and "schedule backup: created (v1)" in result.stdout
    monday_night = as_json(cli("oncall", "--at", "2026-12-07T20:00", "--json"))["ladders"][0]["legs"]
    assert monday_night[0] == {"leg": "primary", "contacts": ["bob"]}  # the hand-over was Monday 08:00
    assert monday_night[1] == {"leg": "secondary", "contacts": ["erin"]}
    office = as_json(cli("oncall", "--at", "2026-12-08T10:00", "--json"))["ladders"][0]["legs"]
    assert office[0]["contacts"] == ["grace"] and office[1]["contacts"] == ["frank"]


def test_legs_can_be_put_on_and_off_a_schedule_with_the_cli(rota: Cli) -> None:
    added = rota("ladder", "add-leg", "rota", "nights", "--schedule", "techs", "--channels", "sms")
    assert added.exit_code == 0, added.output
    legs = as_json(rota("ladder", "show", "rota", "--json"))["definition"]["legs"]
    assert legs[-1] == {"name": "nights", "schedule": "techs", "channels": ["sms"]}
    both = rota("ladder", "set-leg", "rota", "fallback", "--schedule", "techs")
    assert both.exit_code == 0 and "fallback schedule none → techs" in both.stdout
    unknown = rota("ladder", "set-leg", "rota", "fallback", "--schedule", "backup")
    assert unknown.exit_code == 2 and "unknown schedule 'backup'" in unknown.output
    nobody = rota("ladder", "set-leg", "rota", "nights", "--schedule", "none")
    assert nobody.exit_code == 2 and "a leg needs contacts:, schedule:, or both" in nobody.output
    only = rota("ladder", "set-leg", "rota", "fallback", "--contacts", "none")
    assert only.exit_code == 0 and as_json(rota("ladder", "show", "rota", "--json"))["definition"]["legs"][1] == {
        "name": "fallback", "schedule": "techs", "channels": ["sms"]}
    back = rota("ladder", "set-leg", "rota", "fallback", "--contacts", "bob", "--schedule", "none")
    assert back.exit_code == 0, back.output
    assert "schedule" not in as_json(rota("ladder", "show", "rota", "--json"))["definition"]["legs"][1]
