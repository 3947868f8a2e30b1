"""The group commit (escalator.store.group_commit): who shares a transaction with whom, and its contract."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from escalator.store.group_commit import Batch, GroupCommit, Rejected, run_batch


class Writer:
    """Stands in for run_batch (no database): records each transaction's steps; can be held."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()

    def __call__(self, engine: Any, calls: list[Any]) -> Batch:
        self.hold.wait(10)
        self.batches.append([call(None) for call in calls])
        return Batch(self.batches[-1], uncertain=False)


def step(name: str) -> Any:
    return lambda session: name


def test_routine_steps_wait_for_company_and_never_hold_up_an_urgent_one() -> None:
    writer = Writer()

    async def scenario() -> list[str]:
        batcher = GroupCommit(None, write=writer)
        routine = [asyncio.create_task(batcher.submit(step(f"r{i}"), urgent=False)) for i in range(3)]
        await asyncio.sleep(0)  # queued, lingering for company
        assert await batcher.submit(step("u")) == "u"  # written at once, alone
        return await asyncio.gather(*routine)

    assert asyncio.run(scenario()) == ["r0", "r1", "r2"]
    assert writer.batches == [["u"], ["r0", "r1", "r2"]]


def test_routine_steps_that_waited_their_turn_join_the_next_urgent_transaction() -> None:
    writer = Writer()

    async def scenario() -> None:
        batcher = GroupCommit(None, write=writer)
        writer.hold.clear()
        first = asyncio.create_task(batcher.submit(step("u0")))  # the writer is busy with this one
        await asyncio.sleep(0.01)
        routine = asyncio.create_task(batcher.submit(step("r"), urgent=False))
        await asyncio.sleep(GroupCommit.LINGER * 2)  # r has waited long enough
        urgent = asyncio.create_task(batcher.submit(step("u1")))
        await asyncio.sleep(0)
        writer.hold.set()
        await asyncio.gather(first, routine, urgent)

    asyncio.run(scenario())
    assert writer.batches == [["u0"], ["u1", "r"]]  # urgent first; the routine step not starved


def test_a_step_that_writes_before_it_refuses_breaks_the_contract(engine) -> None:
    """Rejected must come before any write, or the shared transaction would keep half a step."""
    from escalator.store.tables import IncidentNoteRow

    def refuses_cleanly(tx):
        raise Rejected("unknown ladder", "x")

    def refuses_late(tx):
        tx.insert(IncidentNoteRow.__table__, {"incident_id": "x", "at": None, "note": "half"})
        raise Rejected("too late", "x")

    def refuses_after_an_orm_change(tx):
        tx.session.add(IncidentNoteRow(incident_id="x", note="half"))
        raise Rejected("too late", "x")

    orm = run_batch(engine, [refuses_after_an_orm_change])
    assert isinstance(orm.results[0], AssertionError)
    clean = run_batch(engine, [refuses_cleanly])
    assert isinstance(clean.results[0], Rejected) and not clean.uncertain
    broken = run_batch(engine, [refuses_late])
    assert isinstance(broken.results[0], AssertionError) and "wrote before it refused" in str(broken.results[0])


def test_a_failed_commit_is_reported_as_uncertain_with_its_incidents(engine) -> None:
    """The writer tells the engine which incidents' steps were in a commit that failed."""
    uncertain: list[list[str]] = []

    def fine(tx):
        return "ok"

    def breaks(tx):
        raise RuntimeError("connection lost")

    async def scenario():
        commit = GroupCommit(engine, on_uncertain=uncertain.append)
        results = await asyncio.gather(commit.submit(fine, "a"), commit.submit(breaks, "b"), commit.submit(fine, "c"),
                                       return_exceptions=True)
        await commit.submit(fine, "d")  # a batch of its own that commits: nothing uncertain
        return results

    results = asyncio.run(scenario())
    assert results[0] == "ok" and isinstance(results[1], RuntimeError) and results[2] == "ok"
    assert uncertain == [["a", "b", "c"]]  # one shared transaction failed: all three are in doubt
