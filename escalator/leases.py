"""Keeps this replica's lease: renews it, claims incidents nobody alive drives, lets go of what
it no longer drives, and releases everything on shutdown (escalator.store.leases has the rules).

Every second it claims free incidents (a replica died, or released them on SIGTERM); every third
of the lease it renews. With the default 10 s lease a dead replica's incidents are driven again
within about 11 s, each at its current leg and deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime

from escalator import clock
from escalator.engine import Engine
from escalator.metrics import Metrics
from escalator.store.leases import Leases
from escalator.walk import ACTIVE

log = logging.getLogger("escalator.leases")

CLAIM_EVERY_S = 1.0
BATCH = 500


class LeaseKeeper:
    def __init__(
        self, leases: Leases, engine: Engine, metrics: Metrics, ttl_s: float, now: Callable[[], datetime] = clock.now
    ):
        self.leases = leases
        self.engine = engine
        self.metrics = metrics
        self.renew_every = ttl_s / 3
        self.now = now

    async def start(self, single_replica: bool) -> None:
        """Before the replica reports ready: register our lease, take back what is in our name and
        claim what nobody drives. With one replica guaranteed (SQLite's file lock) every lease is
        free: whoever held it is dead."""
        if single_replica:
            await asyncio.to_thread(self.leases.expire_all)
        await asyncio.to_thread(self.leases.renew, self.now())
        windows, resent, claimed = await self.claim(own_too=True)
        log.info("replica %s: drives %d open incidents (%d windows re-armed, %d interrupted pages re-sent)",
                 self.leases.replica, claimed, windows, resent)
        self.metrics.leases_held.set(len(self.engine.owned))

    async def claim(self, own_too: bool = False) -> tuple[int, int, int]:
        windows = resent = claimed = 0
        while True:
            ids = await asyncio.to_thread(self.leases.claim, self.now(), BATCH, own_too)
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
        # What we drive but is no longer ours, and pages running here for incidents closed meanwhile.
        doubtful = (self.engine.driving() | self.engine.paging()) - kept
        if doubtful:
            driving = self.engine.driving()
            for incident_id, (status, owner) in (await asyncio.to_thread(self.engine.store.statuses, doubtful)).items():
                closed = status not in ACTIVE
                # owner is us again when a step here took it after the read above (a new incident).
                if closed or (incident_id in driving and owner != self.leases.replica):
                    log.info("incident %s: %s; its window and pages here stop", incident_id,
                             "closed on another replica" if closed else "now driven by another replica")
                    self.engine.let_go(incident_id, closed)
        self.metrics.leases_held.set(len(self.engine.owned))

    async def run(self, stop: asyncio.Event) -> None:
        last_renew = time.monotonic()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), CLAIM_EVERY_S)
                return
            except TimeoutError:
                pass
            try:
                if time.monotonic() - last_renew >= self.renew_every:
                    last_renew = time.monotonic()
                    await self.renew()
                windows, resent, claimed = await self.claim()
                if claimed:
                    log.warning("took over %d incidents whose lease ran out (%d windows re-armed, %d pages re-sent)",
                                claimed, windows, resent)
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
