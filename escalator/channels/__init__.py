"""The paging seam: one small interface every channel (voice, SMS, push) implements.

The walk decides *that* a contact is paged on a channel; a channel only delivers and reports the
outcome. Real Twilio and FCM channels plug in here; until then (and whenever no provider is
configured) the dry-run channel writes each page to the log.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Protocol

from escalator.ladders import Contact
from escalator.logs import mask_phone

log = logging.getLogger("escalator.channels")


@dataclass(frozen=True)
class Page:
    incident_id: str
    key: str
    channel: str
    contact: Contact
    summary: str
    cycle: int
    leg: str
    window_s: float
    code: str | None = None  # the SMS code a reply refers to (SMS pages only)
    leg_index: int = 0
    test: bool = False  # `escalator contact test`: no incident behind it, nothing to acknowledge
    reminder: bool = False  # asks the acker to confirm an expiring acknowledgement (SPEC §11)
    caller: str | None = None  # the incident's caller, when the ladder offers it (SPEC §11; push data)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    ref: str | None = None
    reason: str | None = None
    dead_tokens: tuple[str, ...] = ()  # push tokens the provider says no longer exist
    opted_out: bool = False  # the number texted STOP: the provider refuses texts to it (SPEC §11)


@dataclass(frozen=True)
class Delivery:
    """Where a page stands with its provider, in the provider's own word (`status`), and what it
    means: `final`, nothing more will change; `ok`, it reached the person or is on its way.
    Each adapter knows its provider's vocabulary; nothing outside it does."""

    status: str
    final: bool
    ok: bool


OPTED_OUT = "opted out of SMS (STOP)"  # SPEC §11: the reason an opted-out number's SMS pages fail
TEST_TEXT = "Test page from escalator: this phone receives pages. No reply needed."


class Channel(Protocol):
    name: str

    async def send(self, page: Page) -> Outcome: ...

    async def delivery_status(self, ref: str) -> Delivery: ...

    async def cancel(self, ref: str) -> None: ...  # stop a page still on its way (a queued or ringing call)

    async def notify(self, contact: Contact, incident_id: str, text: str, title: str = "Incident taken") -> bool:
        """A short text, best effort; True when the provider took it. `incident_id` "" for notices
        about no incident (hand-overs)."""
        ...

    async def close(self) -> None: ...


def describe(page: Page) -> str:
    address = f"{len(page.contact.push_tokens)} device(s)" if page.channel == "push" else mask_phone(page.contact.phone)
    return f"{page.channel} to {page.contact.id} ({address}) for incident {page.incident_id}, leg {page.leg}"


class DryRunChannel:
    """Writes each page to the log instead of sending it (the default with no provider configured)."""

    _ids = itertools.count(1)

    def __init__(self, name: str):
        self.name = name

    async def send(self, page: Page) -> Outcome:
        log.info("DRY-RUN page %s: %s", describe(page), page.summary)
        return Outcome(True, ref=f"dry-run-{next(self._ids)}")

    async def notify(self, contact: Contact, incident_id: str, text: str, title: str = "Incident taken") -> bool:
        log.info("DRY-RUN %s notice to %s (%s): %s", self.name, contact.id, incident_id or "on call", text)
        return True

    async def delivery_status(self, ref: str) -> Delivery:
        return Delivery("dry-run", final=True, ok=True)

    async def cancel(self, ref: str) -> None:
        log.info("DRY-RUN %s cancel %s", self.name, ref)

    async def close(self) -> None:
        return None


class NotConfiguredChannel:
    """A channel with neither credentials nor dry-run: every page fails, visibly, at once."""

    def __init__(self, name: str):
        self.name = name

    async def send(self, page: Page) -> Outcome:
        return Outcome(False, reason="not configured")

    async def delivery_status(self, ref: str) -> Delivery:
        return Delivery("not configured", final=True, ok=False)

    async def cancel(self, ref: str) -> None:
        return None

    async def notify(self, contact: Contact, incident_id: str, text: str, title: str = "Incident taken") -> bool:
        return False

    async def close(self) -> None:
        return None
