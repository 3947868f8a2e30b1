"""The provider queue (escalator.provider_queue) and how retries and breakers see it: a bound on the
requests in flight, priority order, deadlines that abandon instead of sending late, and waiting that
never counts against the provider."""

from __future__ import annotations

import asyncio

import pytest

from escalator.provider_queue import CANCEL, FIRST, NOTICE, RETRY, Abandoned, ProviderQueue
from escalator.resilience import CLOSED, CircuitBreaker, call


def run(coro):
    return asyncio.run(coro)


def test_no_more_than_the_limit_in_flight_and_priority_order_then_arrival() -> None:
    order: list[str] = []
    peak = 0

    async def scenario() -> None:
        nonlocal peak
        queue = ProviderQueue("twilio", 2)
        gate = asyncio.Event()

        async def request(name: str, priority: int) -> None:
            nonlocal peak
            async with queue.slot(priority, deadline=asyncio.get_running_loop().time() + 60):
                peak = max(peak, queue.in_flight)
                order.append(name)
                await gate.wait()

        holders = [asyncio.create_task(request(f"h{i}", FIRST)) for i in range(2)]
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(request(n, p)) for n, p in
                   (("notice", NOTICE), ("retry", RETRY), ("first-a", FIRST), ("cancel", CANCEL), ("first-b", FIRST))]
        await asyncio.sleep(0.01)
        assert queue.depth == 5 and queue.in_flight == 2
        gate.set()
        await asyncio.gather(*holders, *waiting)
        assert queue.in_flight == 0 and queue.depth == 0

    run(scenario())
    assert peak == 2
    assert order[2:] == ["first-a", "first-b", "cancel", "retry", "notice"]


def test_a_request_that_cannot_get_a_slot_before_its_deadline_is_abandoned_not_sent() -> None:
    waits: list[float] = []

    async def scenario() -> tuple[list[str], int]:
        queue = ProviderQueue("fcm", 1, on_wait=lambda name, s: waits.append(s))
        loop = asyncio.get_running_loop()
        sent: list[str] = []

        async def request(name: str, deadline: float, hold: float) -> None:
            async with queue.slot(FIRST, deadline):
                sent.append(name)
                await asyncio.sleep(hold)

        busy = asyncio.create_task(request("busy", loop.time() + 60, 0.5))
        await asyncio.sleep(0.01)
        with pytest.raises(Abandoned, match="abandoned: its window ended before it could be sent"):
            await request("late", loop.time() + 0.1, 0)
        after = asyncio.create_task(request("after", loop.time() + 60, 0))  # the abandoned one left no hole
        await asyncio.gather(busy, after)
        return sent, queue.depth

    sent, depth = run(scenario())
    assert sent == ["busy", "after"] and depth == 0
    assert any(0.09 <= w < 0.3 for w in waits)  # the abandoned request's wait is measured too


def test_waiting_in_escalator_never_counts_against_the_provider() -> None:
    """A provider answering at once, requests queued behind a slow one past their deadline: they
    are abandoned, and the breaker sees nothing but successes (local waiting is not a failure)."""

    async def scenario() -> tuple[CircuitBreaker, int, int]:
        queue = ProviderQueue("twilio", 1)
        breaker = CircuitBreaker("voice", failure_threshold=2)
        loop = asyncio.get_running_loop()

        async def slow() -> str:
            await asyncio.sleep(0.5)
            return "sent"

        async def fast() -> str:
            return "sent"

        first = asyncio.create_task(call(slow, breaker, loop.time() + 60, clock=loop.time, queue=queue))
        await asyncio.sleep(0.01)
        queued = [asyncio.create_task(call(fast, breaker, loop.time() + 0.1, clock=loop.time, queue=queue)) for _ in range(5)]
        results = await asyncio.gather(first, *queued, return_exceptions=True)
        abandoned = sum(isinstance(r, Abandoned) for r in results)
        return breaker, abandoned, results.count("sent")

    breaker, abandoned, sent = run(scenario())
    assert abandoned == 5 and sent == 1
    assert breaker.state == CLOSED and breaker.failures == 0
