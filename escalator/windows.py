"""Acknowledgment windows: one timer per open incident, on the event loop's own timer heap.

The database holds every deadline; this keeps one timer per open incident in memory and is re-armed
from the database on start.

Why not a scheduler library: APScheduler 3 (used before) costs about 110 µs per window in its
in-memory job store (a Job and a trigger object, a signature check of the callable, a sorted-list
insert and a wake-up on every add) and lists every job to count them. Re-arming 100,000 windows on
a restart took 10 s of the 10 s that SPEC §9 allows. `loop.call_at` is the heap APScheduler's
asyncio scheduler itself sits on: a few µs per window, O(log n). The rules we relied on it for are
kept here and tested (tests/test_windows.py):

- a window that fires late (a stalled loop, a restart) still fires: nothing is ever dropped for
  being late;
- one window per incident: arming replaces the one before (`only_if_newer` keeps a later one);
- each firing runs as a task of its own (`spawn`), so a slow, stale run never holds up the next
  window; overlapping runs for one incident are harmless (the walk ignores a stale window);
- deadlines are wall-clock times: a timer that fires while its deadline is still ahead by the wall
  clock (the clock was stepped back) waits for the rest instead of firing early.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

OnExpire = Callable[[str, int, int, datetime], Awaitable[None]]
Spawn = Callable[[Awaitable[None]], Any]
EARLY_S = 0.002  # a timer this close to its deadline fires (the loop's own clock granularity)
WATCH_EVERY_S = 0.25  # how often the wall clock is compared with the loop's
JUMP_S = 0.02  # a change of the wall clock against the loop's clock beyond this re-sets every timer

log = logging.getLogger("escalator.windows")


class Windows:
    def __init__(self, on_expire: OnExpire, now: Callable[[], datetime], spawn: Spawn | None = None):
        self._on_expire = on_expire
        self._now = now
        self._spawn = spawn or self._keep
        self._kept: set[asyncio.Future[None]] = set()  # firings, when no `spawn` is given
        self._timers: dict[str, tuple[asyncio.TimerHandle, int, int, datetime]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self._watcher: asyncio.TimerHandle | None = None
        self._offset = 0.0  # wall clock minus loop clock, as last seen

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = False
        self._offset = self._wall_offset()
        self._watcher = self._loop.call_later(WATCH_EVERY_S, self._watch)

    def shutdown(self) -> None:
        """Stop every timer (their deadlines stay in the database). Firings already running are the
        caller's to wait for or cancel (`spawn`)."""
        for handle, *_ in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._watcher is not None:
            self._watcher.cancel()
        self._loop, self._watcher, self._stopped = None, None, True

    def arm(self, incident_id: str, deadline: datetime, cycle: int, leg_index: int, only_if_newer: bool = False) -> None:
        if self._stopped:
            log.debug("not arming incident %s's window: stopping (it is in the database for the next owner)", incident_id)
            return
        current = self._timers.get(incident_id)
        if current is not None:
            if only_if_newer and (current[1], current[2]) >= (cycle, leg_index):  # a walk's windows only move forward
                return
            current[0].cancel()
        self._set(incident_id, deadline, cycle, leg_index)

    def cancel(self, incident_id: str) -> None:
        current = self._timers.pop(incident_id, None)
        if current is not None:
            current[0].cancel()

    def armed(self) -> int:
        return len(self._timers)

    def _set(self, incident_id: str, deadline: datetime, cycle: int, leg_index: int) -> None:
        if self._loop is None:
            raise RuntimeError("windows are not started (or already shut down)")
        delay = max(0.0, (deadline - self._now()).total_seconds())
        handle = self._loop.call_at(self._loop.time() + delay, self._fire, incident_id)
        self._timers[incident_id] = (handle, cycle, leg_index, deadline)

    def _wall_offset(self) -> float:
        assert self._loop is not None
        return self._now().timestamp() - self._loop.time()

    def _watch(self) -> None:
        """The wall clock against the loop's: after a jump every timer is set again from its deadline."""
        if self._loop is None:
            return
        offset = self._wall_offset()
        if abs(offset - self._offset) > JUMP_S:
            log.warning("the wall clock jumped %+.3f s: setting %d windows again from their deadlines",
                        offset - self._offset, len(self._timers))
            for incident_id, (handle, cycle, leg_index, deadline) in list(self._timers.items()):
                handle.cancel()
                self._set(incident_id, deadline, cycle, leg_index)
        self._offset = offset
        self._watcher = self._loop.call_later(WATCH_EVERY_S, self._watch)

    def _keep(self, coro: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coro)
        self._kept.add(task)
        task.add_done_callback(self._kept.discard)
        return task

    def _fire(self, incident_id: str) -> None:
        current = self._timers.get(incident_id)
        if current is None:
            return
        _, cycle, leg_index, deadline = current
        if (deadline - self._now()).total_seconds() > EARLY_S:  # the wall clock went back: wait for the rest
            self._set(incident_id, deadline, cycle, leg_index)
            return
        del self._timers[incident_id]
        self._spawn(self._on_expire(incident_id, cycle, leg_index, deadline))
