"""SPEC §8: a page is recorded before the provider is called; after a crash it is re-sent at most once."""

from __future__ import annotations

import asyncio

from escalator import clock
from escalator.channels.recording import RecordingChannel
from escalator.engine import Engine
from escalator.metrics import Metrics
from escalator.store.incidents import IncidentStore, NewIncident
from escalator.walk import Acknowledge
from tests.harness import eventually
from tests.test_engine import ladders  # noqa: F401 - fixture


def engine_with(store: IncidentStore, recorder: RecordingChannel) -> Engine:
    return Engine(store, {"voice": recorder, "sms": recorder, "push": recorder}, Metrics())


def test_unconfirmed_pages_are_resent_once_then_failed(ladders) -> None:
    store = IncidentStore(ladders.engine)

    async def crash_while_sending() -> None:
        hung = RecordingChannel("hung", hang={"alice"})  # the process "dies" while the provider call is in flight
        engine = engine_with(store, hung)
        await engine.start()
        await engine.open(NewIncident("inc-r", "slow", "Flooded basement"))
        await hung.wait_for(3)
        for task in list(engine._tasks):
            task.cancel()
        engine.windows.shutdown()

    asyncio.run(crash_while_sending())
    assert {p.status for p in store.pages("inc-r")} == {"pending"}

    async def restart(recorder: RecordingChannel) -> None:
        engine = engine_with(store, recorder)
        await engine.start()
        await asyncio.sleep(0.3)
        await eventually(lambda: not any(t for t in engine._tasks if not t.done()), timeout=5)
        await engine.stop()

    second = RecordingChannel("hung-again", hang={"alice"})

    async def restart_and_crash_again() -> None:
        engine = engine_with(store, second)
        await engine.start()
        await second.wait_for(3)  # re-sent once ...
        for task in list(engine._tasks):
            task.cancel()  # ... and the process dies again before any answer
        engine.windows.shutdown()

    asyncio.run(restart_and_crash_again())
    assert sorted(p.page.channel for p in second.pages) == ["push", "sms", "voice"]
    assert all(p.resent and p.status == "pending" for p in store.pages("inc-r"))

    third = RecordingChannel("after")
    asyncio.run(restart(third))
    assert [p.page.contact.id for p in third.pages] == ["bob", "bob"]  # alice never a third time; bob's leg began
    pages = [p for p in store.pages("inc-r") if p.contact == "alice"]
    assert len(pages) == 3 and {p.status for p in pages} == {"failed"}
    events = store.timeline("inc-r")[0]
    failed = [e for e in events if e.event == "page_failed"]
    assert len(failed) == 3 and all("not confirmed after a re-send" in e.data["reason"] for e in failed)
    # every page of the leg failed: the leg moved on at once to bob
    assert [e.data["leg"] for e in events if e.event == "leg_started"] == ["primary", "secondary"]


def test_pending_pages_of_a_finished_leg_are_not_resent(ladders) -> None:
    store = IncidentStore(ladders.engine)

    async def scenario() -> RecordingChannel:
        hung = RecordingChannel("hung", hang={"alice"})
        engine = engine_with(store, hung)
        await engine.start()
        await engine.open(NewIncident("inc-s", "slow", "Flooded basement"))
        await hung.wait_for(3)
        await engine.handle("inc-s", Acknowledge("ops"))
        for task in list(engine._tasks):
            task.cancel()
        engine.windows.shutdown()
        after = RecordingChannel("after")
        engine = engine_with(store, after)
        await engine.start()
        await asyncio.sleep(0.3)
        await engine.stop()
        return after

    after = asyncio.run(scenario())
    assert after.pages == []
    assert {p.status for p in store.pages("inc-s")} == {"abandoned"}
