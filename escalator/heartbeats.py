"""Heartbeats: a silent publisher is an incident (SPEC §11).

A publisher sends `incidents.heartbeat` `{"source", "interval"}`; the source is known from its
first heartbeat (escalator.store.heartbeats keeps the last one of each in the database). Every
replica watches every source: one silent for 3 intervals opens incident
`heartbeat:<source>:<unix seconds of its last heartbeat>` on ESCALATOR_HEARTBEAT_LADDER (else the
default ladder). The id is the same on every replica and the opening claims the silence in the same
transaction, so one silence is one incident however many replicas watch. The next heartbeat
resolves it (`by: heartbeat`).

Heartbeats are noise in the INCIDENTS stream's 7-day store: once handled (below the durable
consumer's acknowledgement floor) they are purged from it every PURGE_EVERY_S.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from escalator import clock, messages
from escalator.engine import Engine
from escalator.errors import EscalatorError
from escalator.ingest import DURABLE
from escalator.jetstream import INCIDENTS
from escalator.store import heartbeats as store
from escalator.store.group_commit import Rejected
from escalator.store.incidents import NewIncident
from escalator.store.tables import HeartbeatRow

log = logging.getLogger("escalator.heartbeats")

SILENT_AFTER = 3  # intervals without a heartbeat
SCAN_S = 2.0  # how often every source is looked at (the shortest silence is 30 s)
PURGE_EVERY_S = 600.0
BY = "heartbeat"
NO_LADDER = (
    "heartbeats need ESCALATOR_HEARTBEAT_LADDER or ESCALATOR_DEFAULT_LADDER: a silent publisher would have no ladder to page"
)


@dataclass(frozen=True)
class Silence:
    source: str
    last_at: datetime
    interval_s: int

    @property
    def incident_id(self) -> str:
        return silence_id(self.source, self.last_at)

    def summary(self) -> str:
        since = self.last_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"No heartbeat from {self.source} since {since}: urgent calls may not be reaching escalator."


def silence_id(source: str, last_at: datetime) -> str:
    return f"heartbeat:{source}:{int(last_at.timestamp())}"


def silences(rows: Iterable[HeartbeatRow], now: datetime) -> list[Silence]:
    """Pure: the sources silent for SILENT_AFTER intervals whose silence has no incident yet."""
    return [Silence(r.source, r.last_at, r.interval_s) for r in rows if r.incident_id is None and _silent(r, now)]


def _silent(row: HeartbeatRow, now: datetime) -> bool:
    return now - row.last_at >= timedelta(seconds=SILENT_AFTER * row.interval_s)


def state_of(row: HeartbeatRow, now: datetime) -> str:
    """For `escalator heartbeat list`: ok, late (a beat missed), silent (an incident is open or opening)."""
    if row.incident_id is not None or _silent(row, now):
        return "silent"
    return "late" if now - row.last_at > timedelta(seconds=row.interval_s * 1.5) else "ok"


class Heartbeats:
    def __init__(
        self, engine: Engine, ladder: str | None, js: Callable[[], Any] = lambda: None, now: Callable[[], datetime] = clock.now,
        caught_up: asyncio.Event | None = None,
    ):
        self.engine = engine
        # Set once ingest has handled what waited in the stream. Until then a publisher that kept
        # beating while escalator was down would look silent (its heartbeats are still queued).
        self.caught_up = caught_up
        self.db = engine.store.engine
        self.ladder = ladder  # ESCALATOR_HEARTBEAT_LADDER, else ESCALATOR_DEFAULT_LADDER
        self.js = js  # the JetStream context, once connected (for purging handled heartbeats)
        self.now = now
        self._refused: set[str] = set()  # silences whose incident could not be opened: rejected once per process

    def check_configured(self) -> None:
        """At start-up: sources are known but no ladder would take their silence. Refuse to start."""
        if self.ladder is None and store.known(self.db):
            raise EscalatorError(f"{NO_LADDER} (known sources: `escalator heartbeat list`; retire one with `escalator heartbeat forget`)")

    async def beat(self, message: messages.Heartbeat, stored: datetime | None = None) -> None:
        """From ingest. `stored`: when JetStream took it: a heartbeat handled late (escalator was down)
        counts from when it was sent, so a publisher that died meanwhile is not taken for alive.
        Raises Rejected (the reason goes to escalations.rejected) when it cannot be watched."""
        if self.ladder is None:
            raise Rejected(NO_LADDER)
        now = self.now()
        at = min(stored, now) if stored is not None else now  # never ahead of our clock
        before = await asyncio.to_thread(store.get, self.db, message.source)
        if before is not None and at <= before.last_at:
            return  # an older heartbeat again (a redelivery): it ends no silence
        if before is not None and before.incident_id is not None:
            await self.engine.resolve(before.incident_id, BY)  # resolved first: a crash here redelivers the beat
        try:
            cleared = await asyncio.to_thread(store.record, self.db, message.source, message.interval, at)
        except store.TooManySources:
            raise Rejected(f"already {store.MAX_SOURCES} heartbeat sources are known; `escalator heartbeat forget` retires one") from None
        if cleared is not None and (before is None or cleared != before.incident_id):  # opened meanwhile by a replica
            await self.engine.resolve(cleared, BY)

    async def run(self, stop: asyncio.Event) -> None:
        """Supervised: every SCAN_S, open an incident for each new silence; now and then, purge.
        Scanning starts once ingest has caught up with the stream."""
        purged = 0.0
        loop = asyncio.get_running_loop()
        if self.caught_up is not None:
            waiters = [asyncio.ensure_future(self.caught_up.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        while not stop.is_set():
            await self.scan()
            if loop.time() - purged >= PURGE_EVERY_S and await self.purge():
                purged = loop.time()
            try:
                await asyncio.wait_for(stop.wait(), SCAN_S)
            except TimeoutError:
                pass

    async def scan(self) -> int:
        """Open the incidents of the silences found now; returns how many this replica opened."""
        if self.ladder is None:
            return 0
        rows = await asyncio.to_thread(store.known, self.db)
        opened = 0
        for silence in silences(rows, self.now()):
            if silence.incident_id in self._refused:
                continue
            new = NewIncident(
                silence.incident_id, self.ladder, silence.summary(), severity="heartbeat",
                details={"heartbeat": {"source": silence.source, "last_at": silence.last_at.isoformat(), "interval_s": silence.interval_s}},
            )
            try:
                result = await self.engine.open(
                    new, claim=lambda tx, s=silence: store.claim_silence(tx, s.source, s.last_at, s.incident_id)
                )
            except Rejected as rejected:  # e.g. the ladder was deleted: said once, not every scan
                self._refused.add(silence.incident_id)
                log.error("no incident for the silence of heartbeat source %s: %s", silence.source, rejected.reason)
                await self.engine.reject(rejected.reason, silence.incident_id, f"rejected:{silence.incident_id}")
                continue
            if result.outcome == "opened":
                opened += 1
                log.warning("heartbeat source %s silent since %s: incident %s opened", silence.source,
                            silence.last_at.isoformat(), silence.incident_id)
        return opened

    async def purge(self) -> bool:
        """Remove handled heartbeats from the INCIDENTS stream (below the consumer's ack floor)."""
        js = self.js()
        if js is None:
            return False
        try:
            info = await js.consumer_info(INCIDENTS.name, DURABLE)
            floor = int(info.ack_floor.stream_seq or 0)
            if floor:
                await js.purge_stream(INCIDENTS.name, subject="incidents.heartbeat", seq=floor + 1)
            return True
        except Exception as exc:  # NATS away: the next round tries again
            log.info("purging handled heartbeats from the stream failed (%s); trying later", type(exc).__name__)
            return False
