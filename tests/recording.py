"""A recording channel: a test and benchmark double that keeps every page it is given.

It can be told to fail or to hang, per contact, so tests can drive the "cannot reach anyone" and
"hung provider" rules through the real engine.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from escalator.channels import Delivery, Outcome, Page
from escalator.ladders import Contact


@dataclass
class Recorded:
    at: float  # time.monotonic() when the channel received the page
    wall: float  # time.time()
    page: Page


@dataclass
class RecordingChannel:
    name: str
    pages: list[Recorded] = field(default_factory=list)
    notices: list[tuple[str, str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)  # refs of pages asked to be stopped (calls)
    fail: dict[str, str] = field(default_factory=dict)  # contact id → reason
    hang: set[str] = field(default_factory=set)  # contact ids whose pages never return
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Event | None = None

    async def send(self, page: Page) -> Outcome:
        self.pages.append(Recorded(time.monotonic(), time.time(), page))
        self._wake()
        if page.contact.id in self.hang:
            await asyncio.Event().wait()
        if page.contact.id in self.fail:
            return Outcome(False, reason=self.fail[page.contact.id])
        return Outcome(True, ref=f"{self.name}-{next(self._ids)}")

    async def notify(self, contact: Contact, incident_id: str, text: str, title: str = "Incident taken") -> bool:
        self.notices.append((contact.id, incident_id, text))
        self._wake()
        return True

    async def delivery_status(self, ref: str) -> Delivery:
        return Delivery("delivered", final=True, ok=True)

    async def cancel(self, ref: str) -> None:
        self.cancelled.append(ref)

    async def close(self) -> None:
        return None

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Recorded]:
        """Wait until at least `count` pages have arrived."""
        if self._changed is None:
            self._changed = asyncio.Event()
        deadline = time.monotonic() + timeout
        while len(self.pages) < count:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: {len(self.pages)} of {count} pages after {timeout}s")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
        return self.pages
