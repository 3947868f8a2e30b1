"""Ingest: the durable JetStream consumer on `incidents.>`, and what each message does.

A message is acknowledged to JetStream only after its effect is committed; if the database is
down it is redelivered later (nak with back-off), and its id makes a repeat harmless. A bad
message is terminated (never redelivered), published to `escalations.rejected` with the reason,
and counted: the loop never stops for one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from escalator import messages, walk
from escalator.store.incidents import NewIncident, Rejected

log = logging.getLogger("escalator.ingest")

DURABLE = "escalator"


class EngineLike(Protocol):
    async def open(self, new: NewIncident) -> Any: ...

    async def handle(self, incident_id: str, event: walk.Event, note_if_ignored: str | None = None) -> Any: ...

    async def reject(self, reason: str, incident_id: str | None, msg_id: str) -> None: ...


async def dispatch(engine: EngineLike, message: messages.Urgent | messages.Ack | messages.PassOn | messages.Resolve) -> None:
    """Carry one valid message out; raises Rejected when it cannot apply (unknown incident or ladder)."""
    if isinstance(message, messages.Urgent):
        await engine.open(
            NewIncident(
                message.id, message.ladder, message.summary, message.caller, message.severity, message.occurred_at, message.details
            )
        )
        return
    if isinstance(message, messages.Ack):
        event: walk.Event = walk.Acknowledge(message.by, "nats")
        note = f"acknowledgement by {message.by} over NATS changed nothing"
    elif isinstance(message, messages.PassOn):
        event, note = walk.Pass(message.by, "nats"), f"pass by {message.by} over NATS changed nothing"
    else:
        event, note = walk.Resolve(message.by), f"resolve by {message.by or 'someone'} over NATS changed nothing"
    result = await engine.handle(message.id, event, note)
    if result.outcome == "unknown":
        raise Rejected(f"no incident with id {message.id!r}", message.id)


class Ingest:
    def __init__(self, engine: EngineLike, batch: int = 64, on_lag: Callable[[float], None] = lambda seconds: None):
        self.engine = engine
        self.on_lag = on_lag
        self.batch = batch
        self.js: JetStreamContext | None = None
        self.in_flight = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; rides out NATS outages (the client reconnects)."""
        psub = None
        while not stop.is_set():
            if self.js is None:
                await asyncio.sleep(0.5)
                continue
            try:
                if psub is None:
                    psub = await self.js.pull_subscribe(
                        "incidents.>", durable=DURABLE, stream="INCIDENTS",
                        config=ConsumerConfig(
                            ack_policy=AckPolicy.EXPLICIT, ack_wait=60, max_deliver=-1, deliver_policy=DeliverPolicy.ALL,
                            max_ack_pending=10000,
                        ),
                    )
                msgs = await psub.fetch(self.batch, timeout=1)
            except (NatsTimeout, TimeoutError):
                continue
            except Exception as exc:
                log.warning("fetching incidents failed (%s: %s); retrying", type(exc).__name__, exc)
                psub = None
                await asyncio.sleep(1)
                continue
            await self.process(msgs)

    async def process(self, msgs: list[Msg]) -> None:
        """Handle a batch: different incidents concurrently, one incident's messages in order."""
        groups: dict[str, list[tuple[Msg, Any]]] = defaultdict(list)
        for index, msg in enumerate(msgs):
            try:
                parsed: Any = messages.parse(msg.subject, msg.data)
                key = parsed.id
            except messages.BadMessage as bad:
                parsed, key = bad, bad.incident_id or f"#bad{index}"
            groups[key].append((msg, parsed))
        self.in_flight += len(msgs)
        try:
            await asyncio.gather(*(self._group(items) for items in groups.values()))
        finally:
            self.in_flight -= len(msgs)

    async def _group(self, items: list[tuple[Msg, Any]]) -> None:
        for msg, parsed in items:
            await self._one(msg, parsed)

    async def _one(self, msg: Msg, parsed: Any) -> None:
        msg_id = f"rejected:{_stream_seq(msg)}"
        try:
            stored = msg.metadata.timestamp
            self.on_lag((datetime.now(UTC) - stored).total_seconds())
        except Exception:  # no metadata (not a JetStream message): nothing to measure
            pass
        try:
            if isinstance(parsed, messages.BadMessage):
                log.warning("rejected message on %s: %s", msg.subject, parsed.reason)
                await self.engine.reject(parsed.reason, parsed.incident_id, msg_id)
                await msg.term()
                return
            try:
                await dispatch(self.engine, parsed)
            except Rejected as rejected:
                log.warning("rejected %s for %s: %s", msg.subject, rejected.incident_id, rejected.reason)
                await self.engine.reject(rejected.reason, rejected.incident_id, msg_id)
                await msg.term()
                return
            await msg.ack()
        except Exception:
            delivered = msg.metadata.num_delivered if msg.metadata else 1
            delay = min(2 ** min(delivered, 6) * 0.25, 15.0)
            log.exception("could not process %s (delivery %d); redelivering in %.1fs", msg.subject, delivered, delay)
            try:
                await msg.nak(delay=delay)
            except Exception:
                pass  # the ack wait will redeliver it anyway


def _stream_seq(msg: Msg) -> str:
    try:
        return str(msg.metadata.sequence.stream)
    except Exception:
        return "?"
