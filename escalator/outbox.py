"""The outbox publisher: events reach `escalations.<event>` only through it.

A step commits its events to the database (the outbox table) with its state; this publisher sends
them in order, with `Nats-Msg-Id` = `<incident>:<seq>` so a re-sent event is dropped by JetStream's
duplicate window. A NATS outage delays events; none is lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
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

    def __init__(self, source: OutboxSource, on_backlog: Callable[[int], None] = lambda n: None):
        self.source = source
        self.on_backlog = on_backlog
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
            self.on_backlog(len(claim.events))
            published: list[int] = []
            try:
                for event in claim.events:
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
            if len(published) < len(claim.events):
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
