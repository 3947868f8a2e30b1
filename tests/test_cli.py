"""Every ladder/contact CLI command through the real typer app, with its error paths (SPEC §7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import CONTACTS_YAML, LADDER_YAML, REPO, Cli, write


@pytest.fixture
def applied(cli: Cli, tmp_path: Path) -> Cli:
    write(tmp_path / "l/contacts.yaml", CONTACTS_YAML)
    write(tmp_path / "l/night.yaml", LADDER_YAML)
    result = cli("apply", tmp_path / "l")
    assert result.exit_code == 0, result.output
    return cli


def ladder_json(cli: Cli, name: str = "night") -> dict:
    result = cli("ladder", "show", name, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def db_snapshot(cli: Cli) -> list:
    engine = sa.create_engine(cli.env["ESCALATOR_DATABASE_URL"])
    try:
        with engine.connect() as c:
            return [
                c.execute(sa.text(f"SELECT * FROM {t} ORDER BY 1, 2")).all()
                for t in ("contacts", "contact_versions", "ladders", "ladder_versions")
            ]
    finally:
        engine.dispose()


# -- the "done when": the reference ladder, and a refusal that changes nothing -----------


def test_reference_ladder_applies_and_shows(cli: Cli) -> None:
    result = cli("apply", REPO / "ladders")
    assert result.exit_code == 0, result.output
    assert "ladder after-hours: created (v1)" in result.stdout
    shown = cli("ladder", "show", "after-hours")
    assert shown.exit_code == 0
    assert "on call: techs" in shown.stdout and "on call: backup" in shown.stdout and "120s" in shown.stdout
    # the seven people: on the schedules' rotations or the fixed fallbacks
    legs = ladder_json(cli, "after-hours")["definition"]["legs"]
    named = {c for leg in legs for c in leg.get("contacts", [])}
    for schedule in ("techs", "backup"):
        shown = json.loads(cli("schedule", "show", schedule, "--json").stdout)
        named |= {c for r in shown["definition"]["rotations"] for c in r["contacts"]}
    assert named == {"alice", "bob", "carol", "dave", "erin", "frank", "grace"}


def test_unknown_contact_is_refused_with_exit_2_and_nothing_written(applied: Cli, tmp_path: Path) -> None:
    before = db_snapshot(applied)
    bad = write(tmp_path / "bad/day.yaml", LADDER_YAML.replace("night", "day").replace("[alice]", "[alice, zed]"))
    good = write(tmp_path / "bad/contacts.yaml", CONTACTS_YAML.replace("Bob Okafor", "Robert Okafor"))
    result = applied("apply", good, bad)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"escalator: {bad}:8: legs[0].contacts[1]: unknown contact 'zed' (leg 'primary')"
    assert db_snapshot(applied) == before


def test_apply_json_and_invalid_file_json(applied: Cli, tmp_path: Path) -> None:
    changed = write(tmp_path / "c2.yaml", CONTACTS_YAML.replace("Alice Ng", "Alice N."))
    data = json.loads(applied("apply", changed, "--json", "--actor", "mgr", "-m", "typo").stdout)
    assert data["applied"] is True
    assert {"id": "alice", "outcome": "updated", "version": 2} in data["contacts"]
    broken = write(tmp_path / "b.yaml", "ladder: x\nlegs: []\n")
    result = applied("apply", broken, "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "applied": False,
        "problems": [{"file": str(broken), "line": 2, "field": "legs", "message": "must not be empty"}],
    }


def test_validate(applied: Cli, tmp_path: Path) -> None:
    ladder = write(tmp_path / "v/day.yaml", LADDER_YAML.replace("night", "day"))
    result = applied("ladder", "validate", ladder)  # contacts come from the database
    assert result.exit_code == 0 and result.stdout.strip() == "valid: 0 contacts, 0 schedules, 1 ladders"
    offline = applied("ladder", "validate", ladder, "--offline", "--json")
    assert offline.exit_code == 2
    assert {p["message"] for p in json.loads(offline.stdout)["problems"]} >= {"unknown contact 'alice' (leg 'primary')"}
    assert applied("ladder", "validate", REPO / "ladders", "--offline").exit_code == 0
    assert applied("ladder", "show", "day").exit_code == 2  # validate wrote nothing


def test_validate_offline_needs_no_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from escalator.cli import app

    monkeypatch.chdir(tmp_path)
    env = {"ESCALATOR_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    result = CliRunner().invoke(app, ["ladder", "validate", str(REPO / "ladders"), "--offline"], env=env)
    assert result.exit_code == 0, result.output


def test_list_show_history_json(applied: Cli) -> None:
    listing = json.loads(applied("ladder", "list", "--json").stdout)
    assert [(x["name"], x["version"], x["legs"], x["updated_by"]) for x in listing] == [("night", 1, 3, "tester")]
    table = applied("ladder", "list").stdout
    assert "night" in table and "until acknowledged" in table
    shown = ladder_json(applied)
    assert shown["definition"]["legs"][1] == {"name": "secondary", "contacts": ["bob"], "channels": ["voice", "sms", "push"], "ack_timeout": "90s"}
    assert applied("ladder", "set", "night", "--cycles", "2").exit_code == 0
    old = json.loads(applied("ladder", "show", "night", "--version", "1", "--json").stdout)
    assert old["version"] == 1 and old["definition"]["cycles"] == 0
    history = json.loads(applied("ladder", "history", "night", "--json").stdout)
    assert [(h["version"], h["deleted"]) for h in history] == [(1, False), (2, False)]
    assert history[1]["change"] == "cycles 0 → 2"
    assert "cycles 0 → 2" in applied("ladder", "history", "night").stdout
    missing = applied("ladder", "show", "night", "--version", "7")
    assert missing.exit_code == 2 and "has no version 7" in missing.stderr


def test_export_round_trips_through_apply(applied: Cli, tmp_path: Path) -> None:
    exported = applied("ladder", "export", "--with-contacts")
    assert exported.exit_code == 0
    out = tmp_path / "export.yaml"
    assert applied("ladder", "export", "night", "--with-contacts", "--output", out).exit_code == 0
    assert out.read_text() == exported.stdout
    assert "contacts:\n  - id: alice" in exported.stdout and "dave" not in exported.stdout  # only contacts in use
    reapplied = applied("apply", out, "--json")
    data = json.loads(reapplied.stdout)
    assert {c["outcome"] for c in data["contacts"]} == {"unchanged"} and data["ladders"][0]["outcome"] == "unchanged"
    assert applied("ladder", "export", "--with-contacts").stdout == exported.stdout
    assert applied("ladder", "export", "nope").exit_code == 2


def test_add_leg_remove_leg_move_leg(applied: Cli) -> None:
    r = applied("ladder", "add-leg", "night", "manager", "--contacts", "carol", "--channels", "voice,sms", "--ack-timeout", "5m", "--after", "primary")
    assert r.exit_code == 0 and r.stdout.strip() == "night v2: leg manager added"
    legs = ladder_json(applied)["definition"]["legs"]
    assert [leg["name"] for leg in legs] == ["primary", "manager", "secondary", "fallback"]
    assert legs[1] == {"name": "manager", "contacts": ["carol"], "channels": ["voice", "sms"], "ack_timeout": "300s"}
    assert applied("ladder", "move-leg", "night", "manager", "--position", "4").exit_code == 0
    assert [leg["name"] for leg in ladder_json(applied)["definition"]["legs"]][-1] == "manager"
    assert applied("ladder", "move-leg", "night", "manager", "--before", "primary").exit_code == 0
    assert [leg["name"] for leg in ladder_json(applied)["definition"]["legs"]][0] == "manager"
    assert applied("ladder", "remove-leg", "night", "manager").exit_code == 0
    assert [leg["name"] for leg in ladder_json(applied)["definition"]["legs"]] == ["primary", "secondary", "fallback"]
    assert ladder_json(applied)["version"] == 5


@pytest.mark.parametrize(
    "args, words",
    [
        (["add-leg", "night", "x"], "--contacts: a new leg needs --contacts"),
        (["add-leg", "night", "x", "--contacts", ""], "--contacts: name at least one contact"),
        (["add-leg", "night", "x", "--contacts", "Zed!"], "--contacts"),
        (["add-leg", "night", "x", "--contacts", "zed"], "unknown contact 'zed'"),
        (["add-leg", "night", "primary", "--contacts", "bob"], "already has a leg 'primary'"),
        (["add-leg", "night", "x", "--contacts", "bob", "--channels", "fax"], "--channels: 'fax' is not one of"),
        (["add-leg", "night", "x", "--contacts", "bob", "--ack-timeout", "2s"], "--ack-timeout: '2s' is out of range"),
        (["add-leg", "night", "x", "--contacts", "bob", "--position", "9"], "--position: position must be between 1 and 4"),
        (["add-leg", "night", "x", "--contacts", "bob", "--before", "nope"], "--before: ladder 'night' has no leg 'nope'"),
        (["add-leg", "night", "x", "--contacts", "bob", "--before", "primary", "--after", "primary"], "give only one of"),
        (["add-leg", "night", "Bad Leg", "--contacts", "bob"], "leg: 'Bad Leg' is not a valid id"),
        (["add-leg", "nope", "x", "--contacts", "bob"], "no ladder named 'nope'"),
        (["remove-leg", "night", "nope"], "has no leg 'nope'"),
        (["move-leg", "night", "primary"], "say where"),
        (["move-leg", "night", "primary", "--position", "0"], "position must be between 1 and 3"),
        (["set-leg", "night", "primary"], "nothing to change"),
        (["set-leg", "night", "primary", "--rename", "secondary"], "--rename: ladder 'night' already has a leg 'secondary'"),
        (["set-leg", "night", "primary", "--contacts", "dave"], "contact 'dave' has no phone"),
        (["set-leg", "night", "primary", "--contacts", "bob,bob"], "contact 'bob' is listed twice"),
        (["swap", "night", "primary", "nope"], "has no leg 'nope'"),
        (["set", "night"], "nothing to change"),
        (["set", "night", "--cycles", "-1"], "--cycles: must be at least 0"),
        (["set", "night", "--timezone", "Mars/Base"], "--timezone: 'Mars/Base' is not an IANA time zone"),
        (["set", "night", "--ack-timeout", "forever"], "--ack-timeout: 'forever' is not a duration"),
        (["rollback", "night", "--to", "5"], "--to: ladder 'night' has versions 1 to 1"),
        (["rollback", "night"], "--to: ladder 'night' has versions 1 to 1; cannot roll back to 0"),
        (["delete", "nope", "--yes"], "no ladder named 'nope'"),
    ],
)
def test_ladder_edit_refusals(applied: Cli, args: list[str], words: str) -> None:
    before = db_snapshot(applied)
    result = applied("ladder", *args)
    assert result.exit_code == 2, result.output
    assert words in result.stderr, result.stderr
    assert all(line.startswith("escalator: ") for line in result.stderr.splitlines())
    assert db_snapshot(applied) == before


def test_set_leg_swap_set(applied: Cli) -> None:
    r = applied("ladder", "set-leg", "night", "secondary", "--contacts", "carol,alice", "--channels", "sms", "--ack-timeout", "default", "--rename", "backup", "--json")
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data["definition"]["legs"][1] == {"name": "backup", "contacts": ["carol", "alice"], "channels": ["sms"]}
    assert applied("ladder", "swap", "night", "primary", "backup", "--actor", "mgr", "-m", "hand-over").exit_code == 0
    legs = ladder_json(applied)["definition"]["legs"]
    assert legs[0]["contacts"] == ["carol", "alice"] and legs[1]["contacts"] == ["alice"]
    history = json.loads(applied("ladder", "history", "night", "--json").stdout)
    assert (history[-1]["updated_by"], history[-1]["comment"]) == ("mgr", "hand-over")
    r = applied("ladder", "set", "night", "--ack-timeout", "3m", "--cycles", "4", "--description", "new", "--timezone", "Europe/Oslo")
    assert r.exit_code == 0
    d = ladder_json(applied)["definition"]
    assert (d["ack_timeout"], d["cycles"], d["description"], d["timezone"]) == ("180s", 4, "new", "Europe/Oslo")
    again = applied("ladder", "set", "night", "--cycles", "4")
    assert again.exit_code == 0 and again.stdout.strip() == "night: no change"


def test_rollback_and_delete(applied: Cli) -> None:
    applied("ladder", "set", "night", "--cycles", "3")
    r = applied("ladder", "rollback", "night")
    assert r.exit_code == 0 and r.stdout.startswith("night v3: rollback to v1: cycles 3 → 0")
    refused = applied("ladder", "delete", "night", input="n\n")
    assert refused.exit_code == 1 and ladder_json(applied)["version"] == 3
    protected = applied.env | {"ESCALATOR_DEFAULT_LADDER": "night"}
    r = Cli(protected, applied.runner)("ladder", "delete", "night", "--yes")
    assert r.exit_code == 2 and "ESCALATOR_DEFAULT_LADDER" in r.stderr
    assert applied("ladder", "delete", "night", input="y\n").exit_code == 0
    assert applied("ladder", "show", "night").exit_code == 2
    assert json.loads(applied("ladder", "list", "--json").stdout) == []
    assert applied("ladder", "rollback", "night", "--to", "3").exit_code == 0
    assert ladder_json(applied)["version"] == 5


def test_actor_defaults(applied: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    env = {k: v for k, v in applied.env.items() if k != "ESCALATOR_ACTOR"}
    applied.env = env | {"ESCALATOR_ACTOR": None}
    applied("ladder", "set", "night", "--cycles", "1")
    assert ladder_json(applied)["updated_by"] == getpass.getuser()
    applied("ladder", "set", "night", "--cycles", "2", "--actor", "manager@night")
    assert ladder_json(applied)["updated_by"] == "manager@night"


def test_contact_commands(applied: Cli) -> None:
    r = applied("contact", "add", "erin", "--name", "Erin Yamada", "--phone", "+14155550105", "--push-token", "t1", "--push-token", "t2")
    assert r.exit_code == 0 and r.stdout.strip() == "contact erin: created (v1)"
    listed = {c["id"]: c for c in json.loads(applied("contact", "list", "--json").stdout)}
    assert listed["erin"]["push_tokens"] == ["t1", "t2"] and listed["erin"]["phone"] == "+14155550105"
    assert listed["dave"]["phone"] is None
    r = applied("contact", "edit", "erin", "--name", "Erin Y", "--add-push-token", "t3", "--remove-push-token", "t1")
    assert r.stdout.strip() == "contact erin: updated (v2)"
    erin = {c["id"]: c for c in json.loads(applied("contact", "list", "--json").stdout)}["erin"]
    assert (erin["name"], erin["push_tokens"], erin["version"]) == ("Erin Y", ["t2", "t3"], 2)
    assert applied("contact", "edit", "erin", "--no-phone").exit_code == 0
    assert applied("contact", "edit", "erin", "--push-token", "only").exit_code == 0
    erin = {c["id"]: c for c in json.loads(applied("contact", "list", "--json").stdout)}["erin"]
    assert (erin["phone"], erin["push_tokens"]) == (None, ["only"])
    assert applied("contact", "edit", "erin", "--name", "Erin Y").stdout.strip() == "contact erin: no change"
    assert applied("contact", "remove", "erin").stdout.strip() == "contact erin: removed (v5)"
    assert "erin" not in applied("contact", "list").stdout
    assert "erin (removed)" in applied("contact", "list", "--all").stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["add", "alice", "--name", "Again", "--phone", "+14155550199"], "already exists"),
        (["add", "Erin", "--name", "E", "--phone", "+14155550105"], "id: 'Erin' is not a valid id"),
        (["add", "erin", "--name", "E", "--phone", "0105"], "--phone: '0105' is not an E.164"),
        (["add", "erin", "--name", "E"], "needs a phone, push_tokens, or both"),
        (["add", "erin", "--name", "", "--phone", "+14155550105"], "--name: must not be empty"),
        (["edit", "nope", "--name", "x"], "no contact named 'nope'"),
        (["edit", "alice", "--no-phone"], "has no phone, which leg 'primary' needs"),
        (["edit", "bob", "--no-phone"], "a contact needs a phone, push_tokens, or both"),
        (["edit", "bob", "--phone", "+1", "--no-phone"], "not both"),
        (["edit", "alice", "--remove-push-token", "nope"], "has no such push token"),
        (["remove", "bob"], "contact 'bob' is on ladder night: take them off the ladder first"),
        (["remove", "nope"], "no contact named 'nope'"),
    ],
)
def test_contact_refusals(applied: Cli, args: list[str], words: str) -> None:
    before = db_snapshot(applied)
    result = applied("contact", *args)
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert db_snapshot(applied) == before


def test_usage_errors_exit_2(applied: Cli) -> None:
    assert applied("ladder", "show").exit_code == 2
    assert applied("ladder", "frobnicate").exit_code == 2
    assert applied("contact", "add", "x").exit_code == 2  # --name is required
    assert applied("apply").exit_code == 2


def test_missing_path_exit_2(applied: Cli, tmp_path: Path) -> None:
    result = applied("apply", tmp_path / "nowhere")
    assert result.exit_code == 2 and "no such file or folder" in result.stderr


def test_unmigrated_and_unreachable_database_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from escalator.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    fresh = runner.invoke(app, ["ladder", "list"], env={"ESCALATOR_DATABASE_URL": f"sqlite:///{tmp_path}/new.db"})
    assert fresh.exit_code == 1 and "run `escalator db upgrade`" in fresh.stderr
    down = runner.invoke(
        app, ["ladder", "list"], env={"ESCALATOR_DATABASE_URL": "postgresql+psycopg://esc:s3cret@127.0.0.1:1/none?connect_timeout=2"}
    )
    assert down.exit_code == 1 and "unreachable" in down.stderr and "s3cret" not in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    bad_env = runner.invoke(app, ["ladder", "list"], env={"ESCALATOR_HTTP_PORT": "x"})
    assert bad_env.exit_code == 2 and bad_env.stderr.startswith("escalator: ESCALATOR_HTTP_PORT:")


def test_db_commands(cli: Cli) -> None:
    data = json.loads(cli("db", "current", "--json").stdout)
    assert data["current"] == data["head"] and data["head"]
    again = cli("db", "upgrade")
    assert again.exit_code == 0 and f"already at {data['head']}" in again.stdout


def test_contact_test_in_dry_run(applied: Cli) -> None:
    result = applied("contact", "test", "alice", "--wait", "2")
    assert result.exit_code == 0, result.output
    assert [line.split(" (")[0] for line in result.stdout.splitlines()] == ["voice: dry-run", "sms: dry-run", "push: dry-run"]
    assert applied("contact", "test", "nobody").exit_code == 2
    assert "'fax' is not one of" in applied("contact", "test", "alice", "--channel", "fax").stderr


def test_an_opted_out_number_shows_in_contact_list_and_is_warned_about_on_apply_and_validate(applied: Cli, tmp_path: Path) -> None:
    from escalator import clock
    from escalator.store import opt_outs
    from escalator.store.db import make_engine

    engine = make_engine(applied.env["ESCALATOR_DATABASE_URL"])
    try:
        opt_outs.opt_out(engine, "+14155550102", clock.now(), opt_outs.STOP_REPLY)  # bob texted STOP
        listed = {c["id"]: c for c in json.loads(applied("contact", "list", "--json").stdout)}
        assert listed["bob"]["sms_opted_out"]["source"] == "STOP reply" and listed["alice"]["sms_opted_out"] is None
        assert "opted out (STOP)" in applied("contact", "list").stdout
        for command in (("apply", tmp_path / "l"), ("ladder", "validate", tmp_path / "l")):
            result = applied(*command)
            assert result.exit_code == 0, result.output  # a warning, not a refusal
            warned = [line for line in result.stderr.splitlines() if "opted out of SMS" in line]
            # bob is texted on the secondary and the fallback leg; nobody else opted out
            assert [("'secondary'" in w, "'fallback'" in w, "texts bob" in w) for w in warned] == [(True, False, True), (False, True, True)]
        opt_outs.opt_in(engine, "+14155550102")  # START
        assert "opted out" not in applied("ladder", "validate", tmp_path / "l").stderr
    finally:
        engine.dispose()


def test_ladder_set_turns_expiring_acknowledgements_and_the_caller_offer_on_and_off(applied: Cli) -> None:
    assert applied("ladder", "set", "night", "--ack-expires", "30m", "--no-connect-caller").exit_code == 0
    shown = ladder_json(applied)
    assert (shown["definition"]["ack_expires"], shown["definition"]["connect_caller"]) == ("1800s", False), shown
    assert "acknowledgements expire after 1800s" in applied("ladder", "show", "night").stdout
    history = applied("ladder", "history", "night").stdout
    assert "ack_expires off → 1800s" in history and "connect_caller True → False" in history
    for bad in ("4m", "25h", "soon"):
        refused = applied("ladder", "set", "night", "--ack-expires", bad)
        assert refused.exit_code == 2 and "--ack-expires" in refused.stderr, refused.output
    assert applied("ladder", "set", "night", "--ack-expires", "off", "--connect-caller").exit_code == 0
    shown = ladder_json(applied)
    assert "ack_expires" not in shown["definition"] and "connect_caller" not in shown["definition"]
