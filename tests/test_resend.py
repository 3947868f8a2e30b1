"""SPEC §8: a page is recorded before the provider is called; after a crash it is re-sent at most once."""

from __future__ import annotations

import asyncio

from escalator import clock
from tests.recording import RecordingChannel
from escalator.engine import Engine
from escalator.lease_keeper import LeaseKeeper
from escalator.metrics import Metrics
from escalator.store.incidents import IncidentStore, NewIncident
from escalator.store.leases import Leases
from escalator.walk import Acknowledge, WindowExpired
from tests.harness import eventually
from tests.test_engine import ladders  # noqa: F401 - fixture


def engine_with(store: IncidentStore, recorder: RecordingChannel) -> Engine:
    return Engine(store, {"voice": recorder, "sms": recorder, "push": recorder}, Metrics())


async def boot(engine: Engine) -> None:
    """What `escalator run` does on start: timers on, then every open incident adopted (one replica)."""
    await engine.start()
    keeper = LeaseKeeper(Leases(engine.store.engine, engine.store.replica, 10), engine, engine.metrics, 10)
    await keeper.start(single_replica=True)
    await keeper.adopt_all()


async def paging_while_alice_hangs(store: IncidentStore, incident_id: str) -> Engine:
    """A running engine that has opened the incident and whose three pages to alice are in flight, hung."""
    hung = RecordingChannel("hung", hang={"alice"})
    engine = engine_with(store, hung)
    await boot(engine)
    await engine.open(NewIncident(incident_id, "slow", "Flooded basement"))
    await hung.wait_for(3)
    return engine


def test_unconfirmed_pages_are_resent_once_then_failed(ladders) -> None:
    store = IncidentStore(ladders.engine)

    async def crash_while_sending() -> None:
        engine = await paging_while_alice_hangs(store, "inc-r")
        for task in list(engine._tasks):
            task.cancel()
        engine.windows.shutdown()

    asyncio.run(crash_while_sending())
    assert {p.status for p in store.pages("inc-r")} == {"pending"}

    async def restart(recorder: RecordingChannel) -> None:
        engine = engine_with(store, recorder)
        await boot(engine)
        await asyncio.sleep(0.3)
        await eventually(lambda: not any(t for t in engine._tasks if not t.done()), timeout=5)
        await engine.stop()

    second = RecordingChannel("hung-again", hang={"alice"})

    async def restart_and_crash_again() -> None:
        engine = engine_with(store, second)
        await boot(engine)
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
        engine = await paging_while_alice_hangs(store, "inc-s")
        for task in list(engine._tasks):  # the process dies with alice's pages unconfirmed
            task.cancel()
        engine.windows.shutdown()
        # while it is down, alice's leg ends (another process, or the window on a restart)
        store.step("inc-s", WindowExpired(1, 0), clock.now())
        after = RecordingChannel("after")
        engine = engine_with(store, after)
        await boot(engine)
        await eventually(lambda: len(after.pages) == 2)
        await engine.stop()
        return after

    after = asyncio.run(scenario())
    assert sorted(p.page.contact.id for p in after.pages) == ["bob", "bob"]  # the current leg's pages, once
    alice = [p for p in store.pages("inc-s") if p.contact == "alice"]
    assert {p.status for p in alice} == {"abandoned"}


def test_pages_still_retrying_stop_when_somebody_takes_the_incident(ladders) -> None:
    """An ack must stop pages already in flight (a voice retry must not ring anyone afterwards)."""
    store = IncidentStore(ladders.engine)

    async def scenario() -> Engine:
        engine = await paging_while_alice_hangs(store, "inc-stop")
        assert "inc-stop" in engine.paging()
        await engine.handle("inc-stop", Acknowledge("ops"))
        await eventually(lambda: {p.status for p in store.pages("inc-stop")} == {"failed"}, timeout=5)
        await engine.stop()
        return engine

    engine = asyncio.run(scenario())
    assert engine.paging() == set()
    pages = store.pages("inc-stop")
    assert {p.reason for p in pages} == {"stopped: the incident was taken or resolved"}
    events = [e.event for e in store.timeline("inc-stop")[0]]
    assert events.index("acknowledged") < events.index("page_failed")


def test_a_shutdown_leaves_unfinished_pages_pending_for_the_resend_rule(ladders) -> None:
    store = IncidentStore(ladders.engine)

    async def scenario() -> None:
        engine = await paging_while_alice_hangs(store, "inc-down")
        await engine.stop(grace=0.1)

    asyncio.run(scenario())
    assert {p.status for p in store.pages("inc-down")} == {"pending"}


def test_a_resend_claim_run_twice_is_still_the_same_claim(ladders) -> None:
    """The group commit may run a step twice (its first commit kept, its answer lost): the second run
    of a re-send claim must return the claim, not take it for someone else's and drop the page."""
    from escalator.store.group_commit import write_one

    store = IncidentStore(ladders.engine, replica="local")
    store.open(NewIncident("inc-twice", "slow", "No heat"), None, clock.now())
    pending = [p for p in store.unsent_pages(["inc-twice"])]
    _, page, _ = next(p for p in pending if p[1].channel == "voice")
    now = clock.now()
    first = write_one(ladders.engine, lambda tx: store.claim_resend_in(tx, page, "inc-twice", now))
    again = write_one(ladders.engine, lambda tx: store.claim_resend_in(tx, page, "inc-twice", now))
    later = write_one(ladders.engine, lambda tx: store.claim_resend_in(tx, page, "inc-twice", clock.now()))
    assert first is not None and again is not None and again.commands == first.commands
    assert later is None  # another claim (another moment): re-sent once already
