"""Heartbeats (SPEC §11): a silent publisher is an incident. The message rules and the silence rule
as plain values; then the real daemon, a real nats-server and each database: a restart during a
silence, three replicas on PostgreSQL opening one incident, the next heartbeat resolving it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
import sqlalchemy as sa

from escalator import clock, heartbeats, ladder_files, messages
from escalator.errors import EscalatorError
from escalator.store import heartbeats as store
from escalator.store import migrate
from escalator.store.catalog import Catalog
from escalator.store.db import make_engine
from escalator.store.tables import HeartbeatRow
from tests.conftest import Cli, write
from tests.harness import eventually, publish, running_daemon, settings_for, stream_events
from tests.recording import RecordingChannel
from tests.test_engine import nats_server  # noqa: F401 - fixture

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
FILES = """\
contacts:
  - {id: sre, name: Sam, phone: "+14155550109"}
---
ladder: publisher-down
ack_timeout: 600s
legs:
  - {name: sre, contacts: [sre]}
"""


# -- the message ---------------------------------------------------------------------------------


def beat(body) -> messages.Heartbeat:
    return messages.parse("incidents.heartbeat", json.dumps(body).encode())


def test_a_heartbeat_names_its_source_and_interval_which_defaults_to_60s() -> None:
    assert beat({"source": "pbx-1", "interval": "10s"}).interval == 10
    assert beat({"source": "pbx-1", "interval": "5m"}).interval == 300
    assert beat({"source": "pbx-1", "interval": 3600}).interval == 3600
    first = beat({"source": "pbx.main:1"})
    assert (first.source, first.interval, first.id) == ("pbx.main:1", 60, "heartbeat:pbx.main:1")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "source: is required"),
        ({"source": "pbx 1"}, "source: must be 1-100 characters"),
        ({"source": "x" * 101}, "source: must be 1-100 characters"),
        ({"source": 7}, "source:"),
        ({"source": "pbx", "interval": "5s"}, "interval: must be between 10s and 1h"),
        ({"source": "pbx", "interval": "2h"}, "interval: must be between 10s and 1h"),
        ({"source": "pbx", "interval": "soon"}, "interval: must be a duration"),
        ({"source": "pbx", "interval": True}, "interval: must be a duration"),
    ],
)
def test_each_bad_heartbeat_is_refused_with_the_field(body, words) -> None:
    with pytest.raises(messages.BadMessage) as refused:
        beat(body)
    assert words in refused.value.reason, refused.value.reason


# -- the silence rule, on plain values -------------------------------------------------------------


def row(source: str, last: datetime, interval: int = 10, incident: str | None = None) -> HeartbeatRow:
    return HeartbeatRow(source=source, interval_s=interval, first_at=T0, last_at=last, incident_id=incident)


def test_a_source_is_silent_after_three_intervals_and_its_silence_has_one_id() -> None:
    now = T0 + timedelta(seconds=30)
    rows = [row("a", T0), row("b", T0 + timedelta(seconds=1)), row("c", T0, incident="heartbeat:c:1"), row("d", T0, interval=60)]
    found = heartbeats.silences(rows, now)
    assert [s.source for s in found] == ["a"]  # b: 29 s; c: its incident is open; d: 60 s intervals
    assert found[0].incident_id == f"heartbeat:a:{int(T0.timestamp())}"
    assert found[0].summary() == "No heartbeat from a since 2026-12-03 09:00:00 UTC: urgent calls may not be reaching escalator."
    states = [heartbeats.state_of(r, now) for r in rows]
    assert states == ["silent", "late", "silent", "ok"]
    assert heartbeats.state_of(row("e", T0), T0 + timedelta(seconds=15)) == "ok"


def test_the_longest_source_still_makes_a_valid_incident_id() -> None:
    silence = heartbeats.Silence("s" * 100, datetime(2286, 11, 20, tzinfo=UTC), 10)
    assert messages.INCIDENT_ID_RE.fullmatch(silence.incident_id)


# -- the daemon ------------------------------------------------------------------------------------


def incidents_of(db: sa.Engine) -> list[tuple[str, str, str | None]]:
    with db.connect() as c:
        return [tuple(r) for r in c.execute(sa.text("SELECT id, status, summary FROM incidents ORDER BY id")).all()]


async def stream_subjects(url: str) -> dict[str, int]:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info("INCIDENTS", subjects_filter="incidents.>")
        return dict(info.state.subjects or {})
    finally:
        await nc.close()


@pytest.mark.slow
def test_a_daemon_restarted_during_a_silence_opens_its_incident_and_the_next_beat_resolves_it(db_url, nats_server, tmp_path: Path) -> None:
    db = make_engine(db_url)
    migrate.upgrade(db)
    Catalog(db).apply(ladder_files.load([write(tmp_path / "f.yaml", FILES)]), "test", clock.now())
    recorder = RecordingChannel("all")

    def settings(i: int):
        return settings_for(db_url, nats_server.url, tmp_path / f"data{i}", heartbeat_ladder="publisher-down")

    async def scenario():
        async with running_daemon(settings(1), recorder) as daemon:
            await publish(nats_server.url, "incidents.heartbeat", {"source": "pbx-1", "interval": "10s"})
            await publish(nats_server.url, "incidents.heartbeat", {"source": "pbx 2"})  # refused: a bad source
            await eventually(lambda: store.get(db, "pbx-1") is not None)
            last = store.get(db, "pbx-1").last_at
            subjects = await stream_subjects(nats_server.url)  # both heartbeats are in the stream …
        # the daemon is down for the silence: its incident is opened when it is back
        await asyncio.sleep(max(0.0, (last + timedelta(seconds=31) - clock.now()).total_seconds()))
        async with running_daemon(settings(2), recorder) as daemon:
            expected = heartbeats.silence_id("pbx-1", last)
            await eventually(lambda: daemon.store.get(expected) is not None, timeout=15)
            await eventually(lambda: recorder.pages, timeout=10)  # the SRE is paged
            await asyncio.sleep(2.5)  # another scan: still one incident
            opened = incidents_of(db)
            assert await daemon.heartbeats.purge()
            purged = await stream_subjects(nats_server.url)  # … and once handled, purged (at start, then every 10 min)
            await publish(nats_server.url, "incidents.heartbeat", {"source": "pbx-1", "interval": "10s"})
            await eventually(lambda: daemon.store.get(expected).status == "resolved")
            await eventually(lambda: store.get(db, "pbx-1").incident_id is None)  # the beat is recorded after the resolve
            return expected, opened, daemon.store.timeline(expected)[0], subjects, purged, store.get(db, "pbx-1")

    expected, opened, timeline, subjects, purged, after = asyncio.run(scenario())
    events = asyncio.run(stream_events(nats_server.url))
    db.dispose()
    assert opened == [(expected, "open", f"No heartbeat from pbx-1 since {after_since(expected)}: urgent calls may not be reaching escalator.")]
    assert [e.event for e in timeline][:2] == ["opened", "leg_started"]
    assert timeline[-1].event == "resolved" and timeline[-1].data["by"] == "heartbeat"
    assert after is not None and after.incident_id is None  # still known, healthy again
    assert subjects.get("incidents.heartbeat") == 2 and "incidents.heartbeat" not in purged
    rejected = [e for e in events if e["event"] == "rejected"]
    assert len(rejected) == 1 and "source: must be 1-100 characters" in rejected[0]["reason"]


def after_since(incident_id: str) -> str:
    seconds = int(incident_id.rsplit(":", 1)[1])
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@pytest.mark.slow
def test_three_replicas_open_one_incident_for_one_silence(pg_url, nats_server, tmp_path: Path) -> None:
    db = make_engine(pg_url)
    migrate.upgrade(db)
    Catalog(db).apply(ladder_files.load([write(tmp_path / "f.yaml", FILES)]), "test", clock.now())
    recorders = [RecordingChannel("all") for _ in range(3)]

    async def scenario():
        async with contextlib.AsyncExitStack() as stack:
            daemons = []
            for i, recorder in enumerate(recorders):
                settings = settings_for(pg_url, nats_server.url, tmp_path / f"data{i}", replica_id=f"r{i}", default_ladder="publisher-down")
                daemons.append(await stack.enter_async_context(running_daemon(settings, recorder)))
            await publish(nats_server.url, "incidents.heartbeat", {"source": "pbx-1", "interval": "10s"})
            await eventually(lambda: store.get(db, "pbx-1") is not None)
            await eventually(lambda: incidents_of(db), timeout=45)
            await asyncio.sleep(2 * heartbeats.SCAN_S + 1)  # every replica has scanned the silence since
            opened = incidents_of(db)
            await publish(nats_server.url, "incidents.heartbeat", {"source": "pbx-1", "interval": "10s"})
            await eventually(lambda: incidents_of(db)[0][1] == "resolved")
            await eventually(lambda: not any(d.outbox.waiting(1) for d in daemons))
            return opened, sum(len(r.pages) for r in recorders)

    opened, pages = asyncio.run(scenario())
    events = asyncio.run(stream_events(nats_server.url))
    db.dispose()
    assert len(opened) == 1 and opened[0][0].startswith("heartbeat:pbx-1:") and opened[0][1] == "open", opened
    assert [e["event"] for e in events if e.get("incident_id") == opened[0][0]].count("opened") == 1
    assert pages == 2  # Sam by voice and by SMS (he has no push token), paged by one replica only


def test_known_sources_without_a_ladder_stop_start_up_and_unwatched_heartbeats_are_rejected(db_url, nats_server, tmp_path: Path) -> None:
    db = make_engine(db_url)
    migrate.upgrade(db)

    async def unwatched():
        async with running_daemon(settings_for(db_url, nats_server.url, tmp_path / "d1")):
            await publish(nats_server.url, "incidents.heartbeat", {"source": "pbx-1"})
            for _ in range(100):
                events = await stream_events(nats_server.url)
                if any(e["event"] == "rejected" for e in events):
                    return events
                await asyncio.sleep(0.1)
            return []

    events = asyncio.run(unwatched())
    assert [e["reason"] for e in events if e["event"] == "rejected"] == [heartbeats.NO_LADDER]
    assert store.known(db) == []  # not known: nothing would page for its silence
    store.record(db, "pbx-1", 10, clock.now())  # known from an earlier configuration

    async def start():
        from escalator.daemon import Daemon

        await Daemon(settings_for(db_url, nats_server.url, tmp_path / "d2")).run()

    with pytest.raises(EscalatorError) as refused:
        asyncio.run(start())
    db.dispose()
    assert "ESCALATOR_HEARTBEAT_LADDER or ESCALATOR_DEFAULT_LADDER" in str(refused.value) and "heartbeat forget" in str(refused.value)


def test_heartbeat_list_and_forget(cli: Cli) -> None:
    db = make_engine(cli.env["ESCALATOR_DATABASE_URL"])
    now = clock.now()
    store.record(db, "pbx-1", 10, now - timedelta(seconds=40))
    store.record(db, "pbx-2", 60, now)
    db.dispose()
    listed = json.loads(cli("heartbeat", "list", "--json").stdout)
    assert [(s["source"], s["interval_s"], s["state"], s["incident"]) for s in listed] == [("pbx-1", 10, "silent", None), ("pbx-2", 60, "ok", None)]
    assert "pbx-1" in cli("heartbeat", "list").stdout
    assert cli("heartbeat", "forget", "pbx-1").stdout.strip() == "heartbeat source pbx-1: forgotten"
    missing = cli("heartbeat", "forget", "pbx-1")
    assert missing.exit_code == 2 and "no heartbeat source 'pbx-1'" in missing.stderr
    assert [s["source"] for s in json.loads(cli("heartbeat", "list", "--json").stdout)] == ["pbx-2"]


def test_a_silence_is_claimed_once_and_not_after_a_heartbeat_moved_it(engine) -> None:
    """What makes one silence one incident across replicas: the opening claims it in its own
    transaction, so a second replica (or one that read the row before a heartbeat) opens nothing."""
    from escalator.store.incidents import IncidentStore, NewIncident
    from escalator.store.group_commit import write_one

    Catalog(engine).apply(ladder_files.load([write_tmp(FILES)]), "test", clock.now())
    incidents = IncidentStore(engine)
    now = clock.now()
    store.record(engine, "pbx-1", 10, now - timedelta(seconds=40))
    store.record(engine, "pbx-2", 10, now - timedelta(seconds=40))
    found = {s.source: s for s in heartbeats.silences(store.known(engine), now)}

    def open_(silence: heartbeats.Silence):
        new = NewIncident(silence.incident_id, "publisher-down", silence.summary())
        return write_one(engine, lambda tx: incidents.open_in(
            tx, new, None, now, lambda tx: store.claim_silence(tx, silence.source, silence.last_at, silence.incident_id)
        ))

    assert open_(found["pbx-1"]).outcome == "opened"
    assert open_(found["pbx-1"]).outcome == "unclaimed"  # a second replica: nothing, not even a note
    assert incidents.timeline(found["pbx-1"].incident_id)[1] == []
    store.record(engine, "pbx-2", 10, now)  # a heartbeat came in after the scan read the row
    assert open_(found["pbx-2"]).outcome == "unclaimed" and incidents.get(found["pbx-2"].incident_id) is None
    # a heartbeat ending a silence in the second that named it moves on a second: the next silence has an id of its own
    store.record(engine, "pbx-1", 10, found["pbx-1"].last_at.replace(microsecond=900_000))
    assert int(store.get(engine, "pbx-1").last_at.timestamp()) == int(found["pbx-1"].last_at.timestamp()) + 1


def write_tmp(text: str) -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "f.yaml"
    path.write_text(text)
    return path


def test_forget_is_refused_while_the_silence_has_an_incident_open(cli: Cli) -> None:
    from escalator.store.incidents import IncidentStore, NewIncident
    from escalator.walk import Resolve

    db = make_engine(cli.env["ESCALATOR_DATABASE_URL"])
    try:
        Catalog(db).apply(ladder_files.load([write_tmp(FILES)]), "test", clock.now())
        now = clock.now()
        store.record(db, "pbx-1", 10, now - timedelta(seconds=40))
        incidents = IncidentStore(db)
        incidents.open(NewIncident("heartbeat:pbx-1:1", "publisher-down", "No heartbeat"), None, now)
        with db.begin() as c:
            c.execute(sa.text("UPDATE heartbeats SET incident_id = 'heartbeat:pbx-1:1'"))
        refused = cli("heartbeat", "forget", "pbx-1")
        assert refused.exit_code == 2 and "incident heartbeat:pbx-1:1 is open" in refused.stderr, refused.output
        incidents.step("heartbeat:pbx-1:1", Resolve("ops"), now)
        assert cli("heartbeat", "forget", "pbx-1").exit_code == 0
    finally:
        db.dispose()
