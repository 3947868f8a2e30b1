"""`escalator publish` and `escalator incident …` through the real CLI, a real nats-server and a real database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.recording import RecordingChannel
from tests.conftest import Cli
from tests.harness import NatsServer, eventually, running_daemon, settings_for
from tests.test_engine import PEOPLE
from tests.conftest import write


@pytest.fixture
def nats_cli(cli: Cli, tmp_path: Path):
    server = NatsServer(tmp_path / "nats")
    server.start()
    cli.env["ESCALATOR_NATS_URL"] = server.url
    assert cli("apply", write(tmp_path / "people.yaml", PEOPLE)).exit_code == 0
    yield cli, server
    server.stop()


def test_publish_walk_show_ack_and_resolve(nats_cli, db_url, tmp_path) -> None:
    cli, server = nats_cli
    result = cli("publish", "--ladder", "slow", "--summary", "Water in the server room", "--id", "cli-1", "--severity", "high")
    assert result.exit_code == 0 and result.stdout.strip() == "published incident cli-1"
    again = cli("publish", "--ladder", "slow", "--summary", "Water in the server room", "--id", "cli-1")
    assert "duplicate" in again.stdout  # JetStream's own dedupe via Nats-Msg-Id
    recorder = RecordingChannel("all")

    async def walk() -> None:
        settings = settings_for(db_url, server.url, tmp_path / "data", window_scale=0.2)
        async with running_daemon(settings, recorder) as daemon:
            await recorder.wait_for(3)
            acked = await asyncio.to_thread(cli, "incident", "ack", "cli-1", "--by", "alice")
            assert acked.exit_code == 0 and "sent by alice" in acked.stdout
            await eventually(lambda: daemon.store.get("cli-1").status == "acknowledged")
            resolved = await asyncio.to_thread(cli, "incident", "resolve", "cli-1")
            assert resolved.exit_code == 0
            await eventually(lambda: daemon.store.get("cli-1").status == "resolved")

    asyncio.run(walk())
    shown = json.loads(cli("incident", "show", "cli-1", "--json").stdout)
    assert shown["status"] == "resolved" and shown["acked_by"] == "alice" and shown["severity"] == "high"
    assert [e["event"] for e in shown["timeline"]][:2] == ["opened", "leg_started"]
    assert shown["timeline"][-1] == shown["timeline"][-1] | {"event": "resolved", "by": "tester"}
    assert {p["status"] for p in shown["pages"]} == {"sent"}
    table = cli("incident", "show", "cli-1").stdout
    assert "acknowledged" in table and "alice" in table and "Water in the server room" in table
    listed = json.loads(cli("incident", "list", "--json").stdout)
    assert [i["id"] for i in listed] == ["cli-1"]
    assert json.loads(cli("incident", "list", "--open", "--json").stdout) == []
    assert "cli-1" in cli("incident", "list").stdout


def test_pass_from_the_cli(nats_cli, db_url, tmp_path) -> None:
    cli, server = nats_cli
    recorder = RecordingChannel("all")

    async def walk() -> None:
        settings = settings_for(db_url, server.url, tmp_path / "data", window_scale=0.2)
        async with running_daemon(settings, recorder):
            assert (await asyncio.to_thread(cli, "publish", "--ladder", "slow", "--summary", "x", "--id", "p-1")).exit_code == 0
            await recorder.wait_for(3)
            assert (await asyncio.to_thread(cli, "incident", "pass", "p-1", "--by", "ops")).exit_code == 0
            await recorder.wait_for(5, timeout=5)

    asyncio.run(walk())
    assert [p.page.contact.id for p in recorder.pages[3:]] == ["bob", "bob"]


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["publish", "--ladder", "slow", "--summary", ""], 2, "--summary: must not be empty"),
        (["publish", "--ladder", "slow", "--summary", "x", "--caller", "555"], 2, "--caller: must be an E.164"),
        (["publish", "--ladder", "slow", "--summary", "x", "--id", "bad id"], 2, "--id: must be 1-128"),
        (["incident", "ack", "has space"], 2, "--id: must be 1-128"),
        (["incident", "show", "nope"], 2, "no incident with id 'nope'"),
    ],
)
def test_refusals(nats_cli, args, code, words) -> None:
    cli, _ = nats_cli
    result = cli(*args)
    assert result.exit_code == code and words in result.stderr, result.output


def test_unreachable_nats_is_a_one_line_failure(cli: Cli) -> None:
    cli.env["ESCALATOR_NATS_URL"] = "nats://127.0.0.1:1"
    result = cli("publish", "--ladder", "slow", "--summary", "x")
    assert result.exit_code == 1 and result.stderr.startswith("escalator: cannot reach NATS")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_password_in_the_nats_url_is_never_printed(cli: Cli) -> None:
    cli.env["ESCALATOR_NATS_URL"] = "nats://ops:s3cret-pass@127.0.0.1:1"
    for args in (["publish", "--ladder", "slow", "--summary", "x"], ["incident", "ack", "inc-1", "--by", "ops"]):
        result = cli(*args)
        assert result.exit_code == 1 and result.stderr.startswith("escalator: cannot reach NATS")
        assert "s3cret-pass" not in result.output + result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_incident_text_is_shown_as_it_is_never_as_markup(cli: Cli, db_url, tmp_path) -> None:
    from escalator import clock
    from escalator.store.db import make_engine
    from escalator.store.incidents import IncidentStore, NewIncident

    assert cli("apply", write(tmp_path / "people.yaml", PEOPLE)).exit_code == 0
    summary = "Leak [/] in [red]B-wing[/red] [link=https://evil.example]click[/link] [bold"
    engine = make_engine(db_url)
    try:
        IncidentStore(engine).open(NewIncident("mk-1", "slow", summary), None, clock.now())
    finally:
        engine.dispose()
    shown, listed = cli("incident", "show", "mk-1"), cli("incident", "list")
    assert shown.exit_code == 0 and listed.exit_code == 0, shown.output + listed.output
    assert "[/] in [red]B-wing[/red]" in shown.stdout and "\x1b[" not in shown.stdout
    assert "[link=https://evil.example]" in shown.stdout
    assert "mk-1" in listed.stdout and "[/]" in listed.stdout


def test_times_shown_to_people_are_in_the_ladders_time_zone(cli: Cli, db_url, tmp_path) -> None:
    """`ladder show` and `incident show/list` agree: the ladder's zone for people, UTC in JSON."""
    from datetime import UTC, datetime

    from escalator.store.db import make_engine
    from escalator.store.incidents import IncidentStore, NewIncident

    people = PEOPLE.replace("ladder: slow\n", "ladder: slow\ntimezone: America/Chicago\n")
    assert cli("apply", write(tmp_path / "people.yaml", people)).exit_code == 0
    engine = make_engine(db_url)
    try:
        IncidentStore(engine).open(NewIncident("tz-1", "slow", "No heat"), None, datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    finally:
        engine.dispose()
    shown, listed = cli("incident", "show", "tz-1").stdout, cli("incident", "list").stdout
    assert "opened 2026-12-01 03:30:00 CST · deadline 2026-12-01 03:31:00 CST" in shown  # the 60 s window
    assert shown.count("03:30:00 CST") >= 3 and "UTC" not in shown  # and the timeline's rows
    assert "2026-12-01 03:30:00 CST" in listed and "UTC" not in listed
    data = json.loads(cli("incident", "show", "tz-1", "--json").stdout)
    assert data["opened_at"] == "2026-12-01T09:30:00.000Z"
