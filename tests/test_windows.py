"""Acknowledgment windows on the loop's timer heap: the rules the walk relies on (escalator/windows.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from escalator.windows import Windows
from tests.harness import eventually

T0 = datetime(2026, 12, 1, 22, 0, tzinfo=UTC)


class WallClock:
    """A wall clock that follows the loop's clock from T0 and can be stepped like NTP would."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.base = asyncio.get_running_loop().time()

    def __call__(self) -> datetime:
        return T0 + timedelta(seconds=asyncio.get_running_loop().time() - self.base + self.offset)


def run(coro):
    return asyncio.run(coro)


def recorder() -> tuple[list[tuple[str, int, int]], object]:
    """What fired, and the callback that records it."""
    fired: list[tuple[str, int, int]] = []

    async def on_expire(incident_id, cycle, leg_index, deadline) -> None:
        fired.append((incident_id, cycle, leg_index))

    return fired, on_expire


def started(on_expire) -> tuple[Windows, WallClock]:
    now = WallClock()
    windows = Windows(on_expire, now=now)
    windows.start()
    return windows, now


def test_a_late_window_fires_at_once_and_is_never_dropped() -> None:
    fired, on_expire = recorder()

    async def scenario() -> None:
        windows, now = started(on_expire)
        windows.arm("overdue", now() - timedelta(hours=3), 2, 1)  # a restart after a long outage
        await eventually(lambda: fired, timeout=2)
        assert windows.armed() == 0
        windows.shutdown()

    run(scenario())
    assert fired == [("overdue", 2, 1)]


def test_windows_fire_in_deadline_order_and_arming_again_replaces() -> None:
    fired, on_expire = recorder()

    async def scenario() -> None:
        windows, now = started(on_expire)
        for i, ms in enumerate((120, 40, 80)):
            windows.arm(f"inc-{i}", now() + timedelta(milliseconds=ms), 1, 0)
        windows.arm("inc-2", now() + timedelta(milliseconds=160), 1, 1)  # the next leg: replaces inc-2's window
        assert windows.armed() == 3
        await eventually(lambda: len(fired) == 3, timeout=3)
        await asyncio.sleep(0.1)
        windows.shutdown()

    run(scenario())
    assert fired == [("inc-1", 1, 0), ("inc-0", 1, 0), ("inc-2", 1, 1)]


def test_only_if_newer_keeps_a_later_window_and_cancel_stops_one() -> None:
    fired, on_expire = recorder()

    async def scenario() -> None:
        windows, now = started(on_expire)
        windows.arm("a", now() + timedelta(milliseconds=50), 2, 0)
        windows.arm("a", now(), 1, 2, only_if_newer=True)  # an adoption reading an older state: ignored
        windows.arm("b", now() + timedelta(milliseconds=50), 1, 0)
        windows.arm("b", now() + timedelta(milliseconds=80), 1, 1, only_if_newer=True)  # newer: taken
        windows.arm("c", now() + timedelta(milliseconds=30), 1, 0)
        windows.cancel("c")
        windows.cancel("never-armed")
        await asyncio.sleep(0.3)
        windows.shutdown()

    run(scenario())
    assert sorted(fired) == [("a", 2, 0), ("b", 1, 1)]


def test_shutdown_stops_every_timer_and_firings_run_as_tasks_of_their_own() -> None:
    fired: list[int] = []
    spawned: list[asyncio.Task] = []

    async def scenario() -> None:
        gate = asyncio.Event()

        async def on_expire(incident_id, cycle, leg_index, deadline) -> None:
            fired.append(leg_index)
            await gate.wait()  # a slow step: it must not hold up the next window

        def spawn(coro):
            task = asyncio.ensure_future(coro)
            spawned.append(task)
            return task

        now = WallClock()
        windows = Windows(on_expire, now=now, spawn=spawn)
        windows.start()
        windows.arm("slow", now(), 1, 0)
        windows.arm("other", now() + timedelta(milliseconds=30), 1, 1)
        windows.arm("later", now() + timedelta(seconds=30), 1, 2)
        await eventually(lambda: len(fired) == 2, timeout=3)
        windows.shutdown()
        assert windows.armed() == 0
        gate.set()
        await asyncio.gather(*spawned)

    run(scenario())
    assert fired == [0, 1] and len(spawned) == 2


@pytest.mark.parametrize(("armed_in", "step", "fires_within"), [
    (0.2, -0.3, (0.45, 3.0)),  # stepped back 300 ms: the deadline is 450 ms away, not due at 200 ms on the loop
    (30.0, 29.0, (0.0, 2.0)),  # an NTP step forward (or a suspended host): due within a second, not after 30 s
])
def test_a_stepped_wall_clock_moves_each_window_with_its_deadline(armed_in: float, step: float, fires_within: tuple) -> None:
    fired: list[float] = []

    async def on_expire(incident_id, cycle, leg_index, deadline) -> None:
        fired.append(asyncio.get_running_loop().time())

    async def scenario() -> float:
        now = WallClock()
        windows = Windows(on_expire, now=now)
        windows.start()
        began = asyncio.get_running_loop().time()
        windows.arm("inc", now() + timedelta(seconds=armed_in), 1, 0)
        await asyncio.sleep(0.05)
        now.offset = step
        await eventually(lambda: fired, timeout=5)
        windows.shutdown()
        return fired[0] - began

    took = run(scenario())
    assert fires_within[0] <= took < fires_within[1], took


def test_arming_after_shutdown_does_nothing() -> None:
    async def on_expire(incident_id, cycle, leg_index, deadline) -> None:
        raise AssertionError("must not fire")

    async def scenario() -> int:
        now = WallClock()
        windows = Windows(on_expire, now=now)
        windows.start()
        windows.shutdown()
        windows.arm("late-step", now(), 1, 0)  # a step finishing while the daemon stops
        await asyncio.sleep(0.1)
        return windows.armed()

    assert run(scenario()) == 0
