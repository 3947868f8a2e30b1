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
    replica publishes them meanwhile), publishes them — different incidents' events at once, one
    incident's in `seq` order — and deletes what went out."""

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
            self._wake.clear()  # a kick from here on (a step committed during this round) ends the idle sleep
            claim = await asyncio.to_thread(self.source.claim, self.BATCH)
            published: list[int] = []
            try:
                failed = await self._publish(claim.events, published, until=self.clock() + self.ROUND_S)
            finally:
                await asyncio.shield(asyncio.to_thread(claim.finish, published))
            if failed:
                log.warning("publishing events failed (%s); %d waiting, retrying in %.1fs", failed,
                            len(claim.events) - len(published), delay)
                await self._sleep(stop, delay)
                delay = min(delay * 2, 5.0)
            else:
                delay = 0.2
                if not claim.events:
                    await self._sleep(stop, 1.0, keep_kick=True)

    async def _publish(self, events: list[Any], published: list[int], until: float) -> str | None:
        """Publish in rounds: each round sends the next event of every incident at once (one
        connection: they reach the stream in the order sent) and waits for their acknowledgements.
        An incident's next event goes only after the one before it is acknowledged, so a failure
        can never let a later event of an incident overtake an earlier one; other incidents go on.
        Returns what went wrong, if anything did."""
        assert self.js is not None
        queues: dict[str, list[Any]] = {}
        for event in events:
            queues.setdefault(event.incident_id or f"#{event.id}", []).append(event)
        failed: str | None = None
        while queues and self.clock() <= until:  # a slow NATS must not hold the rows' locks for long
            heads = [(key, waiting[0]) for key, waiting in queues.items()]
            answers = await asyncio.gather(*(
                self.js.publish(e.subject, json.dumps(e.payload).encode(), headers={"Nats-Msg-Id": e.msg_id}, timeout=5)
                for _, e in heads
            ), return_exceptions=True)
            for (key, event), answer in zip(heads, answers):
                if isinstance(answer, BaseException):
                    if isinstance(answer, asyncio.CancelledError):
                        raise answer
                    failed = failed or type(answer).__name__
                    del queues[key]  # this incident waits for the next round of the loop above
                    continue
                published.append(event.id)
                queues[key].pop(0)
                if not queues[key]:
                    del queues[key]
        return failed

    async def _sleep(self, stop: asyncio.Event, seconds: float, keep_kick: bool = False) -> None:
        """Until `seconds` pass, the daemon stops, or a kick. `keep_kick`: a kick that came since the
        round's claim counts (its rows may have been committed just after the claim read)."""
        if not keep_kick:
            self._wake.clear()
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
