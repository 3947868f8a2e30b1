"""Hand-over notices (SPEC §10, `notify_handoff: true`): when someone comes on call, by a turn, a
window opening or an override, they get one SMS (push when they have no phone), never a call.

Every replica scans; the database decides who sends (escalator.store.handoffs claims each notice
by its key), so one notice goes out per hand-over whatever the number of replicas. Each scan looks
back LOOKBACK: a daemon that was down across a hand-over sends the notice late rather than never,
as long as the person is still on call; a notice whose time on call is already over is not sent.
A notice is sent at most once: claimed, then sent, then recorded (`sent`, `failed` when the provider
did not take it, `skipped` when nothing reaches the person); a crash between claim and send loses
that one notice rather than risk sending it twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from escalator import clock, oncall
from escalator.schedules import handoff_text
from escalator.store.catalog import Catalog
from escalator.store.handoffs import FAILED, SENT, SKIPPED, Handoffs

log = logging.getLogger(__name__)

INTERVAL_S = 15.0
LOOKBACK = timedelta(hours=12)
TITLE = "You are on call"


class HandoffNotices:
    def __init__(
        self, catalog: Catalog, store: Handoffs, channels: Mapping[str, Any], now: Callable[[], datetime] = clock.now,
        interval_s: float = INTERVAL_S,
    ):
        self.catalog = catalog
        self.store = store
        self.channels = channels
        self.now = now
        self.interval_s = interval_s

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.scan()
            try:
                await asyncio.wait_for(stop.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def scan(self) -> int:
        """Send every notice due and not yet claimed; returns how many this replica sent."""
        now = self.now()
        due = await asyncio.to_thread(self._due, now)
        sent = 0
        for schedule, timezone, instant, person in due:
            if await asyncio.to_thread(self.store.claim, schedule, person.contact, instant, person.until, now):
                sent += await self._send(schedule, timezone, instant, person)
        return sent

    def _due(self, now: datetime) -> list[tuple[str, str, datetime, oncall.OnCall]]:
        versions = [v for v in self.catalog.schedules() if v.definition is not None and v.definition.notify_handoff]
        if not versions:
            return []
        overrides = self.catalog.overrides([v.name for v in versions], since=now - LOOKBACK)
        due = []
        for v in versions:
            d = v.definition
            assert d is not None
            mine = tuple(oncall.Override(str(o.id), o.by, o.start, o.until, o.instead_of, o.add) for o in overrides if o.schedule == v.name)
            due += [(v.name, d.timezone, t, p) for t, p in oncall.arrivals(d.plan(), mine, now - LOOKBACK, now) if p.until > now]
        return due

    async def _send(self, schedule: str, timezone: str, instant: datetime, person: oncall.OnCall) -> int:
        contacts = await asyncio.to_thread(self.catalog.contact_map)
        contact = contacts.get(person.contact)
        name = "sms" if contact is not None and contact.phone else "push" if contact is not None and contact.push_tokens else None
        channel = self.channels.get(name) if name else None
        if contact is None or channel is None:
            await asyncio.to_thread(self.store.finish, schedule, person.contact, instant, SKIPPED, name, "no channel reaches them")
            return 0
        text = handoff_text(schedule, instant, person.until, timezone)
        try:
            taken = await asyncio.wait_for(channel.notify(contact, "", text, title=TITLE), timeout=30)
            reason = None if taken else "the provider did not take it (breaker open, refused or failed)"
        except Exception as exc:  # best effort, as every notice: recorded, never retried into a second one
            taken, reason = False, type(exc).__name__
        if not taken:
            log.warning("hand-over notice to %s on %s not sent: %s", contact.id, name, reason)
            await asyncio.to_thread(self.store.finish, schedule, person.contact, instant, FAILED, name, reason)
            return 0
        log.info("hand-over notice to %s on %s for schedule %s", contact.id, name, schedule)
        await asyncio.to_thread(self.store.finish, schedule, person.contact, instant, SENT, name, None)
        return 1
