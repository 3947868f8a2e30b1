"""Ingest keeps one incident's messages in order even when one of them fails and is redelivered:
a resolve never overtakes the urgent message it resolves. Real nats-server and JetStream; the
engine is a stand-in recording what it was asked (the daemon's engine is tested elsewhere)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats

from escalator import bus, walk
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

    async def handle(self, incident_id: str, event: walk.Event, note_if_ignored: str | None = None) -> StepResult:
        self.calls.append((type(event).__name__, incident_id))
        return StepResult("changed" if ("open", incident_id) in self.calls else "unknown")

    async def reject(self, reason: str, incident_id: str | None, msg_id: str) -> None:
        self.calls.append(("rejected", incident_id or "?"))


def test_a_failed_message_holds_back_the_later_ones_of_its_incident(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()

    async def scenario() -> list[tuple[str, str]]:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await bus.ensure_streams(js)
        for body, subject in ((urgent("o-1"), "incidents.urgent"), ({"id": "o-1", "by": "ops"}, "incidents.resolve"),
                              (urgent("o-2"), "incidents.urgent")):
            await publish(server.url, subject, body)
        engine = FlakyEngine()
        ingest = Ingest(engine)
        ingest.js = js
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop))
        try:
            await eventually(lambda: ("Resolve", "o-1") in engine.calls and ("open", "o-2") in engine.calls, timeout=20)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await nc.close()
        return engine.calls

    try:
        calls = asyncio.run(scenario())
    finally:
        server.stop()
    mine = [c for c in calls if c[1] == "o-1"]
    assert mine == [("open failed", "o-1"), ("open", "o-1"), ("Resolve", "o-1")]  # never resolve-before-open
    assert ("rejected", "o-1") not in calls
