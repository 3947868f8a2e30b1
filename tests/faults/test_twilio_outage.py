"""Fault injection: Twilio answers 500 for a sustained period. The voice and SMS breakers open, push
carries the legs meanwhile, and once Twilio recovers a probe closes the breakers and voice and SMS
page again. Real `twilio` client against the Twilio double; push is a recording double."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.harness import eventually, publish
from tests.test_engine import ladders, nats_server, urgent  # noqa: F401 - fixtures
from tests.test_twilio import stack

pytestmark = pytest.mark.slow


def test_sustained_twilio_500s_open_the_breakers_push_carries_then_they_close(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            double.api_status = 500
            broke_at = time.monotonic()
            for i in range(3):
                await publish(nats_server.url, "incidents.urgent", urgent(f"t5-{i}", "slow"))
            await eventually(lambda: all(daemon.channels[n].breaker.state == "open" for n in ("voice", "sms")), timeout=20)
            opened_after = time.monotonic() - broke_at
            requests_when_open = double.requests
            await publish(nats_server.url, "incidents.urgent", urgent("t5-open", "slow"))
            await eventually(lambda: any(p.page.incident_id == "t5-open" for p in push.pages), timeout=10)
            await asyncio.sleep(5)
            spared = double.requests - requests_when_open  # requests Twilio was spared while open
            double.api_status = 201
            healed_at, healed_wall = time.monotonic(), time.time()
            await eventually(lambda: all(daemon.channels[n].breaker.state == "closed" for n in ("voice", "sms")), timeout=60, interval=0.2)
            closed_after = time.monotonic() - healed_at
            await publish(nats_server.url, "incidents.urgent", urgent("t5-after", "slow"))
            await eventually(lambda: {m.to for m in double.messages} and any(c for c in double.calls), timeout=15)
            await eventually(lambda: len([e for e in daemon.store.timeline("t5-after")[0] if e.event == "page_sent"]) == 3, timeout=15)
            during = [e for e in daemon.store.timeline("t5-open")[0] if e.at.timestamp() < healed_wall]
            return opened_after, spared, closed_after, during, daemon.store.timeline("t5-after")[0]

    opened_after, spared, closed_after, during, after = asyncio.run(scenario())
    failed = [e.data for e in during if e.event == "page_failed"]
    assert {f["channel"] for f in failed} == {"voice", "sms"} and all(f["reason"].startswith("breaker open") for f in failed)
    assert {e.data["channel"] for e in during if e.event == "page_sent"} == {"push"}  # push carried the legs
    assert spared == 0  # no request reached Twilio while the breakers were open (before the probe)
    assert {e.data["channel"] for e in after if e.event == "page_sent"} == {"voice", "sms", "push"}
    print(f"\nTwilio 500s: breakers open after {opened_after:.1f}s, 0 requests while open, push carried the legs; "
          f"closed {closed_after:.1f}s after Twilio recovered (30 s reset timeout, then one probe)")
