"""Keeps this replica's lease: renews it, claims incidents nobody alive drives, lets go of what it
no longer drives, and releases everything on shutdown (escalator.store.leases has the rules).

Two loops, so a long takeover can never delay the renewal and let our own lease run out: renewal
every third of the lease (then a check that what we drive is still ours, and that what the
database says is ours is driven here), and claiming every second. With the default 10 s lease a
dead replica's incidents are driven again within about 11 s, each at its current leg and deadline.

One replica on SQLite (guarded by a file lock) needs neither loop: nobody else can take anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from escalator import clock
from escalator.engine import Engine
from escalator.metrics import Metrics
from escalator.store.leases import Leases

log = logging.getLogger("escalator.leases")

CLAIM_EVERY_S = 1.0
BATCH = 500
THOROUGH_EVERY = 30  # claim rounds between sweeps for owners that never registered a lease


class LeaseKeeper:
    def __init__(
        self, leases: Leases, engine: Engine, metrics: Metrics, ttl_s: float, now: Callable[[], datetime] = clock.now
    ):
        self.leases = leases
        self.engine = engine
        self.metrics = metrics
        self.renew_every = ttl_s / 3
        self.now = now
        self.single = False
        self._rounds = 0

    async def start(self, single_replica: bool) -> None:
        """Before anything can step an incident here: register our lease. Then, before the replica
        reports ready, drive what is in our name (a restarted container) and claim what nobody drives.
        With one replica guaranteed every lease is free: whoever held it is dead."""
        self.single = single_replica
        if single_replica:
            await asyncio.to_thread(self.leases.expire_all)
        await asyncio.to_thread(self.leases.renew, self.now())

    async def adopt_all(self) -> None:
        mine = sorted(await asyncio.to_thread(self.leases.kept))
        windows = resent = 0
        for start in range(0, len(mine), BATCH):
            w, r = await self.engine.adopt(mine[start : start + BATCH])
            windows, resent = windows + w, resent + r
        w, r, claimed = await self.claim()
        log.info("replica %s: drives %d open incidents (%d windows re-armed, %d interrupted pages re-sent)",
                 self.leases.replica, len(mine) + claimed, windows + w, resent + r)
        self.metrics.leases_held.set(len(self.engine.owned))

    async def claim(self) -> tuple[int, int, int]:
        windows = resent = claimed = 0
        self._rounds += 1
        thorough = self._rounds % THOROUGH_EVERY == 0
        while True:
            ids = await asyncio.to_thread(self.leases.claim, self.now(), BATCH, thorough)
            if ids:
                w, r = await self.engine.adopt(ids)
                windows, resent, claimed = windows + w, resent + r, claimed + len(ids)
            if len(ids) < BATCH:
                if claimed:
                    self.metrics.leases_held.set(len(self.engine.owned))
                return windows, resent, claimed

    async def renew(self) -> None:
        await asyncio.to_thread(self.leases.renew, self.now())
        kept = await asyncio.to_thread(self.leases.kept)
        # What we drive or page for but the database no longer gives us: checked one by one, locked.
        for incident_id in (self.engine.driving() | self.engine.paging()) - kept:
            why = await self.engine.reconsider(incident_id)
            if why:
                log.info("incident %s %s; its window here stops", incident_id,
                         "was closed on another replica" if why == "closed" else "is driven by another replica now")
        # What the database gives us but we do not drive: a claim whose adopt failed half-way.
        orphans = sorted(kept - self.engine.driving())
        if orphans:
            await self.engine.adopt(orphans)
        self.metrics.leases_held.set(len(self.engine.owned))

    async def run(self, claiming: asyncio.Event, renewing: asyncio.Event) -> None:
        """Claims until `claiming` is set (shutdown begins), renews until `renewing` is set (just before release)."""
        if self.single:
            return
        await asyncio.gather(self._loop(claiming, CLAIM_EVERY_S, self._claim_round), self._loop(renewing, self.renew_every, self.renew))

    async def _claim_round(self) -> None:
        windows, resent, claimed = await self.claim()
        if claimed:
            log.warning("took over %d incidents nobody was driving (%d windows re-armed, %d pages re-sent)", claimed, windows, resent)

    @staticmethod
    async def _loop(stop: asyncio.Event, every: float, work: Callable[[], object]) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), every)
                return
            except TimeoutError:
                pass
            try:
                await work()  # type: ignore[misc]
            except Exception as exc:  # the database is away: windows here keep firing; try again
                log.warning("lease round failed (%s); retrying", type(exc).__name__)

    async def release(self) -> None:
        """On SIGTERM, after our windows and pages stopped: the other replicas claim within a second."""
        try:
            count = await asyncio.to_thread(self.leases.release)
            log.info("released %d incident leases for the other replicas", count)
        except Exception as exc:
            log.warning("could not release leases (%s); they run out on their own within the lease time", type(exc).__name__)
        self.metrics.leases_held.set(0)
