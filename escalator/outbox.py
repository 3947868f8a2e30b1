"""The outbox publisher: events reach `escalations.<event>` only through it.

A step commits its events to the database (the outbox table) with its state; this publisher sends
them in order, with `Nats-Msg-Id` = `<incident>:<seq>` so a re-sent event is dropped by JetStream's
duplicate window. A NATS outage delays events; none is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from nats.js import JetStreamContext

log = logging.getLogger("escalator.outbox")


class OutboxSource(Protocol):
    def claim(self, limit: int = ...) -> Any: ...  # escalator.store.outbox.Claim


class OutboxPublisher:
    """Publishes what the outbox holds. Several replicas run one each: a round claims rows (no other
    replica publishes them meanwhile), publishes them one at a time so an incident's events reach the
    stream in `seq` order, stops at the first failure, and deletes what went out."""

    BATCH = 500
    ROUND_S = 10.0  # a claim is held at most this long: what is left goes back for the next round

    def __init__(self, source: OutboxSource, clock: Callable[[], float] = time.monotonic):
        self.source = source
        self.clock = clock
        self.js: JetStreamContext | None = None
        self._wake = asyncio.Event()

    def kick(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.2
        while not stop.is_set():
            if self.js is None:  # not connected yet: claim nothing another replica could publish
                await self._sleep(stop, 1.0)
                continue
            claim = await asyncio.to_thread(self.source.claim, self.BATCH)
            published: list[int] = []
            until = self.clock() + self.ROUND_S
            try:
                for event in claim.events:
                    if self.clock() > until:  # a slow NATS must not hold the rows' locks for long
                        break
                    await self.js.publish(
                        event.subject, json.dumps(event.payload).encode(), headers={"Nats-Msg-Id": event.msg_id}, timeout=5
                    )
                    published.append(event.id)
                delay = 0.2
            except Exception as exc:
                log.warning("publishing events failed (%s); %d waiting, retrying in %.1fs", type(exc).__name__,
                            len(claim.events) - len(published), delay)
            finally:
                await asyncio.shield(asyncio.to_thread(claim.finish, published))
            if len(published) < len(claim.events) and self.clock() <= until:  # stopped by a failure
                await self._sleep(stop, delay)
                delay = min(delay * 2, 5.0)
            elif not claim.events:
                await self._sleep(stop, 1.0)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        self._wake.clear()
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
