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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy import exc as sa_exc

from escalator import messages, walk
from escalator.answers import UNKNOWN
from escalator.store.group_commit import Rejected
from escalator.store.incidents import NewIncident

log = logging.getLogger("escalator.ingest")

DURABLE = "escalator"
POISON_AFTER = 5  # a message failing the same way this many times in a row is rejected, not retried forever
HOLD_GRACE_S = 5.0  # how long past its return a failed message still holds its incident's later ones
MAX_HELD = 10_000


class EngineLike(Protocol):
    async def open(self, new: NewIncident) -> Any: ...

    async def acknowledge(self, incident_id: str, by: str, channel: str | None, contact: str | None = None) -> Any: ...

    async def pass_on(self, incident_id: str, by: str, channel: str | None) -> Any: ...

    async def resolve(self, incident_id: str, by: str | None) -> Any: ...

    async def reject(self, reason: str, incident_id: str | None, msg_id: str) -> None: ...


OnHeartbeat = Callable[[messages.Heartbeat, datetime | None], Awaitable[None]]


async def dispatch(
    engine: EngineLike, message: messages.Inbound, heartbeat: OnHeartbeat | None = None, stored: datetime | None = None,
) -> None:
    """Carry one valid message out; raises Rejected when it cannot apply (unknown incident or ladder).
    `stored`: when JetStream stored it (a heartbeat handled late still counts from then)."""
    if isinstance(message, messages.Heartbeat):
        if heartbeat is None:
            raise Rejected("heartbeats are not watched by this process", None)
        await heartbeat(message, stored)
        return
    if isinstance(message, messages.Urgent):
        await engine.open(
            NewIncident(
                message.id, message.ladder, message.summary, message.caller, message.severity, message.occurred_at, message.details
            )
        )
        return
    if isinstance(message, messages.Ack):
        answer = await engine.acknowledge(message.id, message.by, walk.NATS)
    elif isinstance(message, messages.PassOn):
        answer = await engine.pass_on(message.id, message.by, walk.NATS)
    else:
        answer = await engine.resolve(message.id, message.by)
    if answer.result == UNKNOWN:
        raise Rejected(f"no incident with id {message.id!r}", message.id)


class Ingest:
    """Fetching never waits for processing: messages are handed on as they arrive (up to
    `max_in_flight` unfinished), so a busy database delays no fetch and a lone message is not held
    back for a batch to fill. One incident's messages are still handled strictly in order."""

    WAIT = 1.0  # an idle fetch returns after this long (how often `stop` is looked at)
    MORE = 0.005  # how long a fetch for a batch lingers when nothing is waiting

    def __init__(
        self, engine: EngineLike, batch: int = 64, on_lag: Callable[[float], None] = lambda seconds: None,
        max_in_flight: int = 2000, on_heartbeat: OnHeartbeat | None = None,
    ):
        self.engine = engine
        self.on_heartbeat = on_heartbeat  # escalator.heartbeats
        self.on_lag = on_lag
        self.batch = batch
        self.max_in_flight = max_in_flight
        self.js: JetStreamContext | None = None
        self.in_flight = 0
        self._tails: dict[str, asyncio.Task[float | None]] = {}  # the last unfinished group of each incident
        # Incidents whose message failed and comes back later: (its stream position, when it is due
        # back, loop time). A later message of the incident that arrives meanwhile waits behind it,
        # even when the failed one's group is already done (it came in a later fetch).
        self._held: dict[str, tuple[int, float]] = {}
        self._tasks: set[asyncio.Task[float | None]] = set()
        self._room = asyncio.Event()
        self.consuming = asyncio.Event()  # set once the durable consumer is being fetched from
        self.caught_up = asyncio.Event()  # set once a fetch found nothing waiting: the backlog is handled
        self._failures: dict[str, tuple[str, int]] = {}  # stream sequence → (how it failed, times in a row)
        self._psub: Any = None  # the pull subscription while fetching

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then finish what was fetched; rides out NATS outages.
        Cancelled (out of time at shutdown), it cancels what it started: the rest stays in
        JetStream unacknowledged, for the next replica."""
        try:
            await self._consume(stop)
            if self._tasks:
                await asyncio.wait(set(self._tasks))
        except asyncio.CancelledError:
            for task in self._tasks:
                task.cancel()
            raise
        # Any other failure ends only the fetching loop: the daemon's supervisor starts it again,
        # and the messages already handed on finish meanwhile.

    async def _consume(self, stop: asyncio.Event) -> None:
        psub: Any = None
        try:
            psub = await self._fetching(stop)
        finally:  # stopped, or failed (the supervisor starts it again): no subscription left behind
            for sub in (psub, self._psub):
                if sub is not None:
                    try:
                        await sub.unsubscribe()
                    except Exception:
                        pass
            self._psub = None

    async def _fetching(self, stop: asyncio.Event) -> Any:
        psub = None
        while not stop.is_set():
            if self.js is None:  # not connected yet (set by the daemon)
                await asyncio.sleep(0.05)
                continue
            if self.in_flight >= self.max_in_flight:  # back-pressure: JetStream keeps the rest
                self._room.clear()
                await _first(self._room, stop)
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
                    self._psub = psub
                    self.consuming.set()
                msgs = await self._fetch(psub)
            except (NatsTimeout, TimeoutError):
                self.caught_up.set()
                continue
            except Exception as exc:
                log.warning("fetching incidents failed (%s: %s); retrying", type(exc).__name__, exc)
                psub = self._psub = None
                await asyncio.sleep(1)
                continue
            self.start(msgs)
        return psub

    async def _fetch(self, psub: Any) -> list[Msg]:
        """What is waiting, up to a batch; if nothing is, the next message as soon as it arrives.
        (nats-py's fetch(n) that has to wait keeps waiting for all n until its timeout: a lone
        incident would sit there for up to a second. fetch(1) returns with the first message.)"""
        try:
            return await psub.fetch(self.batch, timeout=self.MORE)
        except (NatsTimeout, TimeoutError):
            return await psub.fetch(1, timeout=self.WAIT)

    def start(self, msgs: list[Msg]) -> None:
        """Hand a batch on: different incidents concurrently, each incident's messages after its
        earlier ones (from this batch or an earlier one) are done."""
        groups: dict[str, list[tuple[Msg, Any]]] = defaultdict(list)
        for msg in msgs:
            try:
                parsed: Any = messages.parse(msg.subject, msg.data)
                key = parsed.id
            except messages.BadMessage as bad:
                parsed, key = bad, bad.incident_id or f"#bad{_stream_seq(msg)}"
            except Exception as exc:  # parse is total; this is the belt to its braces
                parsed = messages.BadMessage(f"message could not be parsed ({type(exc).__name__})")
                key = f"#bad{_stream_seq(msg)}"
            groups[key].append((msg, parsed))
        for key, items in groups.items():
            task = asyncio.get_running_loop().create_task(self._group(key, items, self._tails.get(key)))
            self._tails[key] = task
            self._tasks.add(task)
            self.in_flight += len(items)
            task.add_done_callback(lambda t, key=key, n=len(items): self._done(t, key, n))

    def _done(self, task: asyncio.Task[float | None], key: str, count: int) -> None:
        self._tasks.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]
        self.in_flight -= count
        if self.in_flight < self.max_in_flight:
            self._room.set()

    async def _group(self, key: str, items: list[tuple[Msg, Any]], after: asyncio.Task[float | None] | None) -> float | None:
        """Handle one incident's messages in order. Returns None, or the redelivery delay of a message
        that failed: the messages after it are then sent back too, a little later, never handled
        ahead of it (a resolve must not overtake the urgent message it resolves) — also those that
        arrive after its group is done, until it is handled or HOLD_GRACE_S past its return."""
        loop = asyncio.get_running_loop()
        failed = None
        if after is not None:
            await asyncio.wait([after])
            failed = None if after.cancelled() or after.exception() else after.result()
        for msg, parsed in items:
            position = _stream_position(msg)
            held = self._held.get(key)
            if held is not None and loop.time() > held[1] + HOLD_GRACE_S:  # it went to another replica, or away
                del self._held[key]
                held = None
            if failed is None and held is not None and position > held[0]:
                failed = max(0.0, held[1] - loop.time())
            if failed is not None:
                failed += 0.5
                await _nak(msg, failed)
                continue
            failed = await self._one(msg, parsed)
            if failed is not None and position:
                self._held[key] = (position, loop.time() + failed)
                while len(self._held) > MAX_HELD:  # bounded: the oldest go first
                    del self._held[next(iter(self._held))]
            elif held is not None and position == held[0]:
                del self._held[key]
        return failed

    async def _one(self, msg: Msg, parsed: Any) -> float | None:
        msg_id = f"rejected:{_stream_seq(msg)}"
        stored: datetime | None = None
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
                await dispatch(self.engine, parsed, self.on_heartbeat, stored)
            except Rejected as rejected:
                log.warning("rejected %s for %s: %s", msg.subject, rejected.incident_id, rejected.reason)
                await self.engine.reject(rejected.reason, rejected.incident_id, msg_id)
                await msg.term()
                return
            await msg.ack()
        except Exception as exc:
            delivered = _delivered(msg)
            if self._poisoned(msg, exc):
                reason = f"could not be processed after {POISON_AFTER} attempts: {_describe(exc)}"
                log.error("rejecting %s for %s: %s", msg.subject, getattr(parsed, "id", None), reason)
                try:
                    await self.engine.reject(reason, getattr(parsed, "id", None), msg_id)
                    await msg.term()
                    return None
                except Exception:
                    log.exception("could not reject a failing message; redelivering it")
            delay = min(2 ** min(delivered, 6) * 0.25, 15.0)
            log.exception("could not process %s (delivery %d); redelivering in %.1fs", msg.subject, delivered, delay)
            await _nak(msg, delay)
            return delay
        self._failures.pop(_stream_seq(msg), None)
        return None

    def _poisoned(self, msg: Msg, exc: Exception) -> bool:
        """Has this message now failed the same way POISON_AFTER times in a row? A database that is
        unreachable is not the message's fault: those failures are retried for as long as it takes."""
        if _transient(exc):
            return False
        seq, signature = _stream_seq(msg), _describe(exc)
        last, count = self._failures.pop(seq, (None, 0))
        count = count + 1 if last == signature else 1
        if count >= POISON_AFTER:
            return True
        self._failures[seq] = (signature, count)
        while len(self._failures) > 10_000:  # bounded: the oldest entries go first
            del self._failures[next(iter(self._failures))]
        return False


async def _nak(msg: Msg, delay: float) -> None:
    try:
        await msg.nak(delay=delay)
    except Exception:
        pass  # the ack wait will redeliver it anyway


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _delivered(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:
        return 1


def _describe(exc: BaseException) -> str:
    """A failure in one line: its type and first words (no parameters: hide_parameters is on)."""
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _transient(exc: BaseException) -> bool:
    """Failures of the surroundings, not of the message: the database or NATS unreachable, a timeout."""
    if isinstance(exc, (TimeoutError, ConnectionError, sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def _stream_position(msg: Msg) -> int:
    """The message's sequence in its stream (0 when it has none: such messages keep their order)."""
    try:
        return int(msg.metadata.sequence.stream)
    except Exception:
        return 0


def _stream_seq(msg: Msg) -> str:
    try:
        return str(msg.metadata.sequence.stream)
    except Exception:
        return "?"
