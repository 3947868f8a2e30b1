"""Active-active (SPEC §8): two and three `escalator run` processes on one PostgreSQL and one nats-server,
paging through the real `twilio` client against the Twilio double (which calls back signed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from escalator import clock, ladder_files
from escalator.store import migrate
from escalator.store.catalog import Catalog
from escalator.store.db import make_engine
from escalator.store.incidents import IncidentStore
from tests.conftest import write
from tests.harness import DaemonProcess, eventually, free_port, publish
from tests.test_engine import nats_server  # noqa: F401 - fixture
from tests.twilio_double import TwilioDouble

pytestmark = pytest.mark.slow

ALICE, BOB, CAROL = "+14155550101", "+14155550102", "+14155550103"
RELAY = """\
contacts:
  - {id: alice, name: Alice, phone: "+14155550101"}
  - {id: bob, name: Bob, phone: "+14155550102"}
  - {id: carol, name: Carol, phone: "+14155550103"}
---
ladder: relay
ack_timeout: 20s
cycles: 1
legs:
  - {name: primary, contacts: [alice], channels: [voice, sms]}
  - {name: secondary, contacts: [bob], channels: [voice, sms]}
  - {name: fallback, contacts: [carol], channels: [voice, sms]}
"""


@dataclass
class Replica:
    name: str
    process: DaemonProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.process.port}"

    def ready(self) -> dict:
        with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
            return json.loads(response.read())


@dataclass
class Cluster:
    double: TwilioDouble
    replicas: list[Replica]
    store: IncidentStore
    db: sa.Engine

    def owner(self, incident_id: str) -> str | None:
        row = self.store.get(incident_id)
        return row.owner if row else None

    def replica(self, name: str | None) -> Replica:
        return next(r for r in self.replicas if r.name == name)

    def others(self, name: str | None) -> list[Replica]:
        return [r for r in self.replicas if r.name != name]

    def to(self, number: str) -> list[str]:
        """Provider requests for one number: 'call' or 'sms', in order."""
        return [("call", c.to) for c in self.double.calls if c.to == number] + [
            ("sms", m.to) for m in self.double.messages if m.to == number
        ]

    def legs(self, incident_id: str) -> list[tuple[int, int, float]]:
        return [
            (e.data["cycle"], e.data["leg_index"], e.at.timestamp())
            for e in self.store.timeline(incident_id)[0] if e.event == "leg_started"
        ]


@contextlib.asynccontextmanager
async def cluster(pg_url: str, nats_url: str, tmp_path: Path, size: int, **env_extra: str) -> AsyncIterator[Cluster]:
    db = make_engine(pg_url)
    migrate.upgrade(db)
    Catalog(db).apply(ladder_files.load([write(tmp_path / "relay.yaml", RELAY)]), "test", clock.now())
    async with TwilioDouble() as double:
        replicas = []
        for i in range(size):
            port = free_port()
            env = {
                "ESCALATOR_DATABASE_URL": pg_url, "ESCALATOR_NATS_URL": nats_url, "ESCALATOR_HTTP_PORT": str(port),
                "ESCALATOR_PUBLIC_URL": f"http://127.0.0.1:{port}", "ESCALATOR_DATA_DIR": str(tmp_path / f"r{i}"),
                "ESCALATOR_REPLICA_ID": f"r{i}", "ESCALATOR_DRY_RUN": "false", "ESCALATOR_PUSH_SIGNING_KEY": "shared-test-key-" + "s" * 32,
                "ESCALATOR_TWILIO_ACCOUNT_SID": double.account_sid, "ESCALATOR_TWILIO_AUTH_TOKEN": double.auth_token,
                "ESCALATOR_TWILIO_FROM": "+14155550100", "ESCALATOR_TWILIO_API_URL": double.url, **env_extra,
            }
            replicas.append(Replica(f"r{i}", DaemonProcess(env, tmp_path / f"r{i}.log")))
        await asyncio.gather(*(asyncio.to_thread(r.process.start) for r in replicas))
        try:
            yield Cluster(double, replicas, IncidentStore(db), db)
        finally:
            await asyncio.gather(*(asyncio.to_thread(r.process.terminate) for r in replicas))
            db.dispose()


async def first_leg_paged(c: Cluster, nats_url: str, incident_id: str) -> float:
    """Publish the incident, wait until alice's voice and SMS pages are sent and recorded; its first deadline."""
    await publish(nats_url, "incidents.urgent", urgent(incident_id), incident_id)
    await eventually(lambda: len(c.to(ALICE)) == 2, timeout=15)
    await eventually(lambda: {p.status for p in c.store.pages(incident_id)} == {"sent"}, timeout=10)
    return c.store.get(incident_id).deadline.timestamp()


def urgent(incident_id: str) -> dict:
    return {"id": incident_id, "ladder": "relay", "summary": "No heat, 12 Elm St"}


def test_incidents_spread_across_three_replicas_each_paged_once(pg_url, nats_server, tmp_path) -> None:
    ids = [f"inc-spread-{i}" for i in range(12)]

    async def scenario() -> tuple[dict[str, str | None], list[int], Cluster]:
        async with cluster(pg_url, nats_server.url, tmp_path, 3) as c:
            for incident_id in ids:
                await publish(nats_server.url, "incidents.urgent", urgent(incident_id), incident_id)
                await asyncio.sleep(0.15)
            await eventually(lambda: all(c.owner(i) for i in ids), timeout=15)
            await eventually(lambda: len(c.to(ALICE)) == 2 * len(ids), timeout=15)
            await asyncio.sleep(1.0)  # nothing more should come
            held = [r.ready()["leases_held"] for r in c.replicas]
            return {i: c.owner(i) for i in ids}, held, c

    owners, held, c = asyncio.run(scenario())
    assert len(set(owners.values())) >= 2, owners  # the consumer spread them
    assert sum(held) == len(ids) and held == [list(owners.values()).count(f"r{i}") for i in range(3)]
    assert len(c.to(ALICE)) == 2 * len(ids)  # every incident paged once on voice and SMS: no replica doubled up
    assert c.to(BOB) == []


def test_kill9_of_the_driving_replica_another_continues_at_the_same_leg_and_deadline(pg_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with cluster(pg_url, nats_server.url, tmp_path, 3) as c:
            deadline = await first_leg_paged(c, nats_server.url, "inc-k9")
            victim = c.owner("inc-k9")
            await asyncio.sleep(0.5)
            await asyncio.to_thread(c.replica(victim).process.kill9)  # mid-leg: alice's 20 s window is running
            killed_at = time.time()
            heir = await eventually(lambda: (o := c.owner("inc-k9")) != victim and o, timeout=20, interval=0.1)
            took_over = time.time() - killed_at
            await eventually(lambda: len(c.to(BOB)) == 2, timeout=deadline - time.time() + 10)
            await asyncio.sleep(1.0)
            assert c.owner("inc-k9") == heir  # it drives bob's window now
            return victim, heir, took_over, deadline, c

    victim, heir, took_over, deadline, c = asyncio.run(scenario())
    assert heir != victim and took_over <= 15.0, (heir, took_over)
    legs = c.legs("inc-k9")
    assert [(cycle, leg) for cycle, leg, _ in legs] == [(1, 0), (1, 1)]  # no leg skipped, none repeated
    assert 0 <= legs[1][2] - deadline < 3.0  # the heir fired alice's window at its original deadline (not 20 s later)
    assert len(c.to(ALICE)) == 2 and len(c.to(BOB)) == 2  # alice's pages were confirmed before the kill: none repeated


def test_an_sms_ack_at_a_replica_that_does_not_drive_the_incident_stops_the_walk(pg_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with cluster(pg_url, nats_server.url, tmp_path, 2) as c:
            await publish(nats_server.url, "incidents.urgent", urgent("inc-sms"), "inc-sms")
            text = await eventually(lambda: next((m.body for m in c.double.messages if m.to == ALICE), None), timeout=15)
            code = re.search(r"Reply ACK (\d+) to take it", text).group(1)
            owner = c.owner("inc-sms")
            assert c.replica(owner).ready()["windows_armed"] == 1
            other = c.others(owner)[0]
            status, reply = await c.double.post(other.url + "/twilio/sms", {"From": ALICE, "Body": f"ACK {code}"})
            acked_at = time.monotonic()
            await eventually(lambda: c.replica(owner).ready()["windows_armed"] == 0, timeout=10)
            stopped_after = time.monotonic() - acked_at
            deadline = c.store.get("inc-sms").state["deadline"]
            await asyncio.sleep(21)  # past alice's window: nobody else may be paged
            return owner, other.name, status, reply, stopped_after, deadline, c

    owner, other, status, reply, stopped_after, deadline, c = asyncio.run(scenario())
    assert owner != other and status == 200 and "inc-sms" in reply
    row = c.store.get("inc-sms")
    assert row.status == "acknowledged" and row.acked_by == "alice" and row.owner is None
    assert stopped_after < 3.0  # the owner heard at once (the event on NATS), not at its next lease renewal
    assert c.to(BOB) == [] and [(cycle, leg) for cycle, leg, _ in c.legs("inc-sms")] == [(1, 0)]
    ack = next(e for e in c.store.timeline("inc-sms")[0] if e.event == "acknowledged")
    assert (ack.data["channel"], ack.data["contact"]) == ("sms", "alice")


def test_sigterm_hands_the_incidents_over_at_once(pg_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with cluster(pg_url, nats_server.url, tmp_path, 2) as c:
            deadline = await first_leg_paged(c, nats_server.url, "inc-term")
            leaving = c.replica(c.owner("inc-term"))
            leaving.process.process.send_signal(signal.SIGTERM)
            asked_at = time.time()
            heir = await eventually(lambda: (o := c.owner("inc-term")) not in (None, leaving.name) and o, timeout=15, interval=0.05)
            handed_over = time.time() - asked_at
            code = await asyncio.to_thread(leaving.process.process.wait, 30)
            await eventually(lambda: len(c.to(BOB)) == 2, timeout=deadline - time.time() + 10)
            await asyncio.sleep(0.5)
            return leaving.name, heir, handed_over, code, deadline, c

    leaving, heir, handed_over, code, deadline, c = asyncio.run(scenario())
    assert code == 0 and heir != leaving
    assert handed_over < 3.0, handed_over  # released on SIGTERM, claimed on the heir's next round (1 s)
    legs = c.legs("inc-term")
    assert [(cycle, leg) for cycle, leg, _ in legs] == [(1, 0), (1, 1)]
    assert 0 <= legs[1][2] - deadline < 3.0  # at the original deadline, not a new 20 s window
    assert len(c.to(ALICE)) == 2 and len(c.to(BOB)) == 2  # a clean hand-over repeats nothing


def _seen_in_order(seen: list[tuple[str, int]]) -> dict[str, list[int]]:
    """Per incident, the seqs a subscriber received, repeats dropped: must be 1, 2, 3 … in order."""
    out: dict[str, list[int]] = {}
    for incident_id, seq in seen:
        got = out.setdefault(incident_id, [])
        if seq not in got:
            got.append(seq)
    return out


def test_a_plain_subscriber_sees_each_event_once_with_three_replicas(pg_url, nats_server, tmp_path) -> None:
    """The replicas share the outbox: each (incident, seq) reaches a core subscriber of escalations.>
    once. After a kill -9, at most what the dead replica had in flight comes again, in order."""
    import nats

    first = [f"once-{i}" for i in range(20)]
    second = [f"kill-{i}" for i in range(10)]

    async def scenario():
        async with cluster(pg_url, nats_server.url, tmp_path, 3, ESCALATOR_WINDOW_SCALE="0.1") as c:  # 2 s legs
            seen: list[tuple[str, int]] = []

            async def on_event(msg) -> None:
                data = json.loads(msg.data)
                seen.append((data["incident_id"], data["seq"]))

            nc = await nats.connect(nats_server.url)
            await nc.subscribe("escalations.>", cb=on_event)

            def settled(ids: list[str]) -> bool:  # walked to the end, every event published
                rows = [c.store.get(i) for i in ids]
                if not all(r is not None and r.status == "exhausted" for r in rows):
                    return False
                expected = sum(len(c.store.timeline(i)[0]) for i in ids)
                return len({e for e in seen if e[0] in ids}) == expected

            for incident_id in first:
                await publish(nats_server.url, "incidents.urgent", urgent(incident_id), incident_id)
            await eventually(lambda: settled(first), timeout=60, interval=0.25)
            await asyncio.sleep(1.5)  # a replica publishing a copy late would show now
            phase_one = list(seen)
            for incident_id in second:
                await publish(nats_server.url, "incidents.urgent", urgent(incident_id), incident_id)
            await eventually(lambda: all(c.owner(i) for i in second), timeout=15)
            victim = c.owner(second[0])
            await asyncio.to_thread(c.replica(victim).process.kill9)
            await eventually(lambda: settled(second), timeout=90, interval=0.25)
            await asyncio.sleep(1.5)
            await nc.close()
            timelines = {i: [e.seq for e in c.store.timeline(i)[0]] for i in first + second}
            return phase_one, seen, timelines

    phase_one, seen, timelines = asyncio.run(scenario())
    first_counts = {}
    for key in phase_one:
        first_counts[key] = first_counts.get(key, 0) + 1
    repeats = {k: n for k, n in first_counts.items() if n > 1}
    assert repeats == {} and len(first_counts) == sum(len(timelines[i]) for i in first)  # each event once
    in_order = _seen_in_order(seen)
    for incident_id, seqs in timelines.items():
        assert in_order[incident_id] == seqs == list(range(1, len(seqs) + 1)), incident_id  # all, in order
    second_seen = [k for k in seen if k[0] in second]
    repeated_after_kill = len(second_seen) - len(set(second_seen))
    assert repeated_after_kill <= 50  # at most what the dead replica had in flight
    print(f"\nthree replicas: {len(phase_one)} events for {len(first)} incidents, each seen once; after a kill -9, "
          f"{repeated_after_kill} events seen twice (in flight at the kill), every incident's events in order")
