"""How provider requests wait their turn (SPEC §9 "provider physics", §5 "Failures").

Each provider (Twilio: voice and SMS share the account; FCM) has a bound on the requests in flight
to it. Beyond that, requests wait here, in priority order — the first page of a leg ahead of a
call being cancelled, ahead of a retry, ahead of a "taken by …" notice — and, within a priority,
in the order they came. First pages go ahead of cancellations: a storm's thousands of
cancellations at once (legs ending together) must not hold back new incidents' first pages (in
the bench's 10,000 burst, which follows 6,000 legs ending, the last first page came at 57 s with
first pages ahead and at 91 s with cancellations ahead: one run each), and a call placed a moment
after its leg ended still lets its person take the incident. Waiting here is never the provider's fault: a request's timeout and its
circuit breaker only start counting once it holds a slot (escalator.resilience.call), and the
time spent waiting is a metric (`escalator_page_queue_seconds`, `escalator_page_queue_depth`).

A request that has not got a slot by its deadline (the end of its page's window) is abandoned:
`Abandoned`, recorded as such for the page, never sent late and never counted against anyone.

Our own (~60 lines): asyncio has no priority semaphore with deadlines, and a queue of futures in a
heap is simpler than bending asyncio.PriorityQueue to hand out slots.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

FIRST, CANCEL, RETRY, NOTICE = 0, 1, 2, 3  # priorities: lower goes first


class Abandoned(Exception):
    """The request's deadline passed while it waited for a slot: it is not sent at all."""

    def __init__(self, waited: float):
        super().__init__(f"abandoned: its window ended before it could be sent (waited {waited:.1f} s in escalator)")
        self.reason = str(self)
        self.waited = waited


class ProviderQueue:
    def __init__(
        self, name: str, limit: int, clock: Callable[[], float] = time.monotonic,
        on_wait: Callable[[str, float], None] = lambda name, seconds: None,
        on_depth: Callable[[str, int], None] = lambda name, depth: None,
    ):
        self.name = name
        self.limit = limit
        self.clock = clock
        self.on_wait = on_wait
        self.on_depth = on_depth
        self.in_flight = 0
        self.depth = 0  # requests waiting for a slot
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @asynccontextmanager
    async def slot(self, priority: int, deadline: float) -> AsyncIterator[float]:
        """Hold one of the provider's slots for the block; yields how long it waited. Raises
        Abandoned when `deadline` (on `clock`) passes first."""
        queued = self.clock()
        if self.in_flight < self.limit and not self.depth:
            self.in_flight += 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._order), future))
            self.depth += 1
            self.on_depth(self.name, self.depth)
            try:
                await asyncio.wait_for(asyncio.shield(future), timeout=max(deadline - self.clock(), 0.0))
            except (TimeoutError, asyncio.CancelledError) as exc:
                if future.done():  # the slot came just as we gave up: pass it on
                    self._release()
                else:
                    future.cancel()  # left in the heap; skipped when it comes up
                    self.depth -= 1
                    self.on_depth(self.name, self.depth)
                if isinstance(exc, TimeoutError):
                    waited = self.clock() - queued
                    self.on_wait(self.name, waited)
                    raise Abandoned(waited) from None
                raise
        waited = self.clock() - queued
        self.on_wait(self.name, waited)
        try:
            yield waited
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # the slot goes straight to the next in line
                self.depth -= 1
                self.on_depth(self.name, self.depth)
                return
        self.in_flight -= 1
