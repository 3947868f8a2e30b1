"""Fault injection: Twilio accepts connections but answers nothing for 30 s while incidents keep
coming. Each page is cut off at its leg's window; no window waits for a hung request, and push
still reaches people. Real `twilio` client against the Twilio double; push is a recording double."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from bench.__main__ import pct
from tests.harness import eventually, publish
from tests.test_engine import ladders, nats_server, urgent  # noqa: F401 - fixtures
from tests.test_twilio import stack

pytestmark = pytest.mark.slow

HANG_S = 30.0
INCIDENTS = 40  # published over the first 10 s, so every window of every walk falls inside the outage
# The guarantee: a hung provider delays no window. The SPEC §9 target (p99 ≤ 100 ms) is measured by
# bench/, on a quiet machine; here, among the parallel tests, a window is late only if it waited for
# the hang, which is seconds: a second is the bound (the operations alert's) for the 99th percentile.
# A window that waited for its hung pages would be late every time, so the p99 shows it; one window
# of the 120 may be slower than that on a machine running six test workers on two cores (one took
# 1.47 s), and the worst is held to a looser bound that a wait for the 30 s hang would still break.
BOUND_MS = 1000.0
WORST_MS = 3000.0


def test_twilio_hanging_for_30s_delays_no_window(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        # scale 1: the `night` ladder's legs are 5 s, 5 s, 5 s, then exhaustion.
        async with stack(db_url, nats_server, tmp_path, scale=1.0) as (double, daemon, push):
            double.hang = True
            began = time.monotonic()
            for i in range(INCIDENTS):
                await publish(nats_server.url, "incidents.urgent", urgent(f"h-{i}"))
                await asyncio.sleep(10 / INCIDENTS)
            ids = [f"h-{i}" for i in range(INCIDENTS)]

            def all_exhausted() -> bool:
                return all((row := daemon.store.get(i)) is not None and row.status == "exhausted" for i in ids)

            await eventually(all_exhausted, timeout=HANG_S)
            walked_in = time.monotonic() - began
            hung = double.requests
            await asyncio.sleep(max(HANG_S - (time.monotonic() - began), 0))
            double.hang = False
            return walked_in, hung, {i: daemon.store.timeline(i)[0] for i in ids}, list(push.pages)

    walked_in, hung, timelines, pushes = asyncio.run(scenario())
    assert walked_in < HANG_S  # every walk ended while Twilio still hung
    assert hung > 0  # the outage was real: requests reached Twilio and got no answer
    late_ms: list[float] = []
    push_late_ms: list[float] = []
    for incident_id, events in timelines.items():
        legs = [e for e in events if e.event == "leg_started"]
        assert [e.data["leg_index"] for e in legs] == [0, 1, 2], incident_id  # no leg skipped or repeated
        ends = legs[1:] + [next(e for e in events if e.event == "exhausted")]
        for leg, next_step in zip(legs, ends):
            deadline = leg.at + timedelta(seconds=leg.data["window_s"])
            # A leg whose pages all failed passes on early ("unreachable"); that is never late.
            late_ms.append(max((next_step.at - deadline).total_seconds() * 1000, 0.0))
        fallback = legs[2]
        due = legs[1].at + timedelta(seconds=legs[1].data["window_s"])
        first_push = min(p.wall for p in pushes if p.page.incident_id == incident_id and p.page.leg_index == 2)
        push_late_ms.append(max(first_push - due.timestamp(), 0.0) * 1000)
        failed = [e.data for e in events if e.event == "page_failed" and e.data["channel"] in ("voice", "sms")]
        assert failed and all("no answer" in f["reason"] or "breaker open" in f["reason"] for f in failed), failed
        assert {e.data["channel"] for e in events if e.event == "page_sent"} == {"push"}  # push carried the legs
    p99, worst = pct(late_ms, 99), max(late_ms)
    print(f"\nTwilio hanging {HANG_S:.0f}s, {INCIDENTS} incidents, {len(late_ms)} windows: next step after the window "
          f"p50 {pct(late_ms, 50):.1f} / p99 {p99:.1f} / max {worst:.1f} ms; fallback leg's push request after the "
          f"window p99 {pct(push_late_ms, 99):.1f} ms; {hung} Twilio requests hung; walks done in {walked_in:.1f}s")
    assert p99 <= BOUND_MS and worst <= WORST_MS, f"windows waited: p99 {p99:.1f} ms, worst {worst:.1f} ms"
