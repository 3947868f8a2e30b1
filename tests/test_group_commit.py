"""The engine's group commit (escalator.engine.StepBatcher): who shares a transaction with whom."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from escalator.engine import StepBatcher


class Writer:
    """Stands in for IncidentStore.run_batch: records each transaction's steps; can be held."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()

    def __call__(self, calls: list[Any]) -> list[Any]:
        self.hold.wait(10)
        self.batches.append([call(None) for call in calls])
        return self.batches[-1]


def step(name: str) -> Any:
    return lambda session: name


def test_routine_steps_wait_for_company_and_never_hold_up_an_urgent_one() -> None:
    writer = Writer()

    async def scenario() -> list[str]:
        batcher = StepBatcher(writer)
        routine = [asyncio.create_task(batcher.submit(step(f"r{i}"), urgent=False)) for i in range(3)]
        await asyncio.sleep(0)  # queued, lingering for company
        assert await batcher.submit(step("u")) == "u"  # written at once, alone
        return await asyncio.gather(*routine)

    assert asyncio.run(scenario()) == ["r0", "r1", "r2"]
    assert writer.batches == [["u"], ["r0", "r1", "r2"]]


def test_routine_steps_that_waited_their_turn_join_the_next_urgent_transaction() -> None:
    writer = Writer()

    async def scenario() -> None:
        batcher = StepBatcher(writer)
        writer.hold.clear()
        first = asyncio.create_task(batcher.submit(step("u0")))  # the writer is busy with this one
        await asyncio.sleep(0.01)
        routine = asyncio.create_task(batcher.submit(step("r"), urgent=False))
        await asyncio.sleep(StepBatcher.LINGER * 2)  # r has waited long enough
        urgent = asyncio.create_task(batcher.submit(step("u1")))
        await asyncio.sleep(0)
        writer.hold.set()
        await asyncio.gather(first, routine, urgent)

    asyncio.run(scenario())
    assert writer.batches == [["u0"], ["u1", "r"]]  # urgent first; the routine step not starved
