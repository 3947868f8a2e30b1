"""Ingest keeps one incident's messages in order even when one of them fails and is redelivered:
a resolve never overtakes the urgent message it resolves. Real nats-server and JetStream; the
engine is a stand-in recording what it was asked (the daemon's engine is tested elsewhere)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats

from escalator import jetstream
from escalator.answers import UNKNOWN, Answer
from escalator.ingest import Ingest
from escalator.store.incidents import StepResult
from tests.harness import NatsServer, eventually, publish
from tests.test_engine import urgent


class FlakyEngine:
    """Fails the first opening of each incident (a database hiccup); records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failed: set[str] = set()

    async def open(self, new: Any) -> StepResult:
        if new.id not in self.failed:
            self.failed.add(new.id)
            self.calls.append(("open failed", new.id))
            raise RuntimeError("database hiccup")
        self.calls.append(("open", new.id))
        return StepResult("opened")

    async def acknowledge(self, incident_id: str, by: str, channel: str | None, contact: str | None = None) -> Answer:
        return self._act("Acknowledge", incident_id)

    async def pass_on(self, incident_id: str, by: str, channel: str | None) -> Answer:
        return self._act("Pass", incident_id)

    async def resolve(self, incident_id: str, by: str | None) -> Answer:
        return self._act("Resolve", incident_id)

    def _act(self, what: str, incident_id: str) -> Answer:
        self.calls.append((what, incident_id))
        return Answer("done" if ("open", incident_id) in self.calls else UNKNOWN, incident_id)

    async def reject(self, reason: str, incident_id: str | None, msg_id: str) -> None:
        self.calls.append(("rejected", incident_id or "?"))


async def consume(server: NatsServer, engine: Any, messages: list[tuple[str, dict]], until: Any, timeout: float) -> Any:
    """Publish `messages`, run ingest with `engine` until `until()` holds; returns the consumer's info."""
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await jetstream.ensure_streams(js)
    for subject, body in messages:
        await publish(server.url, subject, body)
    ingest = Ingest(engine)
    ingest.js = js
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.run(stop))
    try:
        await eventually(until, timeout=timeout, interval=0.1)
        await asyncio.sleep(1)  # a message redelivered or rejected twice would show now
        return await js.consumer_info("INCIDENTS", "escalator")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await nc.close()


def test_a_failed_message_holds_back_the_later_ones_of_its_incident(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    engine = FlakyEngine()
    messages = [("incidents.urgent", urgent("o-1")), ("incidents.resolve", {"id": "o-1", "by": "ops"}), ("incidents.urgent", urgent("o-2"))]
    try:
        asyncio.run(consume(server, engine, messages, lambda: ("Resolve", "o-1") in engine.calls and ("open", "o-2") in engine.calls, 20))
    finally:
        server.stop()
    mine = [c for c in engine.calls if c[1] == "o-1"]
    assert mine == [("open failed", "o-1"), ("open", "o-1"), ("Resolve", "o-1")]  # never resolve-before-open
    assert ("rejected", "o-1") not in engine.calls


class StubbornEngine:
    """Opening `poison` always fails the same way (a step that can never succeed); opening `outage`
    fails as an unreachable database does, five times (as many as rejects a poison), then works."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.rejected: list[tuple[str, str | None]] = []
        self.opened: list[str] = []

    async def open(self, new: Any) -> StepResult:
        import sqlalchemy.exc

        self.attempts[new.id] = self.attempts.get(new.id, 0) + 1
        if new.id == "poison":
            raise ValueError("cannot store this")
        if new.id == "outage" and self.attempts[new.id] <= 5:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
        self.opened.append(new.id)
        return StepResult("opened")

    async def acknowledge(self, incident_id: str, by: str, channel: str | None, contact: str | None = None) -> Answer:
        return Answer(UNKNOWN, incident_id)

    async def pass_on(self, incident_id: str, by: str, channel: str | None) -> Answer:
        return Answer(UNKNOWN, incident_id)

    async def resolve(self, incident_id: str, by: str | None) -> Answer:
        return Answer(UNKNOWN, incident_id)

    async def reject(self, reason: str, incident_id: str | None, msg_id: str) -> None:
        self.rejected.append((reason, incident_id))


def test_a_message_failing_the_same_way_five_times_is_rejected_but_an_outage_is_waited_out(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    engine = StubbornEngine()
    try:
        info = asyncio.run(consume(server, engine, [("incidents.urgent", urgent("poison")), ("incidents.urgent", urgent("outage"))],
                                   lambda: engine.rejected and "outage" in engine.opened, 40))
    finally:
        server.stop()
    assert engine.attempts["poison"] == 5
    assert engine.rejected == [("could not be processed after 5 attempts: ValueError: cannot store this", "poison")]
    assert engine.attempts["outage"] == 6 and engine.opened == ["outage"]  # never rejected for the database's sake
    assert info.num_ack_pending == 0 and info.num_pending == 0


class _Msg:
    """Just what ingest reads of a JetStream message, to hand it batches in a chosen order."""

    def __init__(self, subject: str, body: dict, position: int) -> None:
        import json
        from types import SimpleNamespace

        self.subject, self.data = subject, json.dumps(body).encode()
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=position), num_delivered=1, timestamp=None)
        self.outcome: str | None = None

    async def ack(self) -> None:
        self.outcome = "ack"

    async def nak(self, delay: float = 0) -> None:
        self.outcome = f"nak {delay:.1f}"

    async def term(self) -> None:
        self.outcome = "term"


def test_a_later_message_that_arrives_after_its_failed_predecessor_was_handled_still_waits() -> None:
    """The urgent message fails in one fetch; the resolve arrives in the next, once the first group
    is done: it is sent back behind the urgent message, not handled ahead of it."""

    async def scenario() -> tuple[list, _Msg, _Msg]:
        engine = FlakyEngine()
        ingest = Ingest(engine)
        first = _Msg("incidents.urgent", urgent("o-1"), 1)
        ingest.start([first])
        await eventually(lambda: first.outcome is not None, timeout=5)
        await asyncio.sleep(0.05)  # its group is done and forgotten
        later = _Msg("incidents.resolve", {"id": "o-1", "by": "ops"}, 2)
        ingest.start([later])
        await eventually(lambda: later.outcome is not None, timeout=5)
        again = _Msg("incidents.urgent", urgent("o-1"), 1)  # the redelivery: handled, and the hold ends
        ingest.start([again])
        await eventually(lambda: again.outcome is not None, timeout=5)
        return engine.calls, first, later

    calls, first, later = asyncio.run(scenario())
    assert first.outcome.startswith("nak") and later.outcome.startswith("nak")
    assert float(later.outcome.split()[1]) > float(first.outcome.split()[1])  # comes back after it
    assert calls == [("open failed", "o-1"), ("open", "o-1")]  # the resolve was not handled ahead
