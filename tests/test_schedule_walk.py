"""Scheduled legs end to end (SPEC §10): real nats-server, SQLite and PostgreSQL, the daemon in this
loop with a recording channel. Who a leg pages is resolved when the leg starts."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from escalator import clock, ladder_files
from escalator.store.catalog import Catalog
from tests.conftest import write
from tests.harness import eventually, publish, running_daemon, settings_for, stream_events
from tests.test_engine import nats_server  # noqa: F401 - fixture
from tests.recording import RecordingChannel


def files(now) -> str:
    # `empty` covers one hour a day, two hours from now: nobody is on call on it now.
    start, end = ((now + timedelta(hours=h)).strftime("%H:00") for h in (2, 3))
    return f"""\
contacts:
  - {{id: alice, name: Alice, phone: "+14155550101", push_tokens: ["tok-a"]}}
  - {{id: bob, name: Bob, phone: "+14155550102"}}
  - {{id: carol, name: Carol, phone: "+14155550103"}}
---
schedule: techs
rotations:
  - {{name: always, contacts: [alice], shift: 1w, start: "2026-11-30 08:00"}}
---
schedule: empty
rotations:
  - name: an-hour-a-day
    contacts: [carol]
    shift: 1d
    start: "2026-11-30 00:00"
    active: [{{days: [mon, tue, wed, thu, fri, sat, sun], from: "{start}", to: "{end}"}}]
---
ladder: rota
ack_timeout: 60s
legs:
  - {{name: primary, schedule: techs, channels: [sms]}}
  - {{name: secondary, schedule: techs, contacts: [carol], channels: [sms]}}
---
ladder: gappy
ack_timeout: 60s
legs:
  - {{name: primary, schedule: empty, channels: [sms]}}
  - {{name: secondary, contacts: [bob], channels: [sms]}}
"""


@pytest.fixture
def rota(catalog: Catalog, tmp_path: Path) -> Catalog:
    catalog.apply(ladder_files.load([write(tmp_path / "rota.yaml", files(clock.now()))]), "test", clock.now())
    return catalog


def legs_started(timeline) -> list[dict]:
    return [e.data for e in timeline if e.event == "leg_started"]


def test_a_scheduled_leg_pages_who_is_on_call_and_a_cover_applies_from_the_next_leg(rota, db_url, nats_server, tmp_path) -> None:
    recorder = RecordingChannel("all")

    async def scenario():
        async with running_daemon(settings_for(db_url, nats_server.url, tmp_path / "data"), recorder) as daemon:
            await publish(nats_server.url, "incidents.urgent", {"id": "inc-rota", "ladder": "rota", "summary": "No heat"})
            await recorder.wait_for(1)
            # bob covers from now on: the leg already started keeps paging alice, the next one pages bob
            now = clock.now()
            rota.add_override("techs", "bob", now, now + timedelta(hours=1), "ops", now, comment="alice is out")
            await asyncio.sleep(0.3)
            assert [(r.page.contact.id, r.page.channel) for r in recorder.pages] == [("alice", "sms")], "; ".join(f"{e.event} {e.data.get('contacts')} {e.data.get('reason')}" for e in daemon.store.timeline("inc-rota")[0])
            await publish(nats_server.url, "incidents.pass", {"id": "inc-rota", "by": "ops"})
            await recorder.wait_for(3, timeout=10)
            await eventually(lambda: not daemon.outbox.waiting(1))
            return daemon.store.timeline("inc-rota")[0], await stream_events(nats_server.url)

    timeline, events = asyncio.run(scenario())
    started = legs_started(timeline)
    assert started[0]["contacts"] == ["alice"] and started[0]["schedules"] == ["techs"]
    assert started[1]["contacts"] == ["carol", "bob"] and started[1]["schedules"] == ["techs"]  # fixed first, then on call
    assert sorted((r.page.contact.id, r.page.leg) for r in recorder.pages) == [
        ("alice", "primary"), ("bob", "secondary"), ("carol", "secondary")]
    published = [e for e in events if e.get("incident_id") == "inc-rota" and e["event"] == "leg_started"]
    assert [e["contacts"] for e in published] == [["alice"], ["carol", "bob"]]


def test_a_gap_makes_the_leg_pass_at_once_with_nobody_on_call(rota, db_url, nats_server, tmp_path) -> None:
    recorder = RecordingChannel("all")

    async def scenario():
        async with running_daemon(settings_for(db_url, nats_server.url, tmp_path / "data"), recorder) as daemon:
            await publish(nats_server.url, "incidents.urgent", {"id": "inc-gap", "ladder": "gappy", "summary": "Flood"})
            await recorder.wait_for(1, timeout=10)  # bob, at once: not after the 60 s window
            return daemon.store.timeline("inc-gap")[0]

    timeline = asyncio.run(scenario())
    names = [e.event for e in timeline]
    assert names[:4] == ["opened", "leg_started", "passed", "leg_started"], names
    assert timeline[1].data["contacts"] == [] and timeline[1].data["schedules"] == ["empty"]
    assert timeline[2].data["reason"] == "nobody on call"
    assert timeline[3].data["contacts"] == ["bob"] and (timeline[3].at - timeline[1].at).total_seconds() < 5
    assert [(r.page.contact.id, r.page.channel) for r in recorder.pages] == [("bob", "sms")]
