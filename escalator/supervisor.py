"""Long-running tasks of the daemon, restarted when they fail (SPEC §3: ingest that fails for any
reason restarts itself, is logged, counted and shown in `/readyz`).

A task that returns has finished its job (the daemon is stopping); one that raises is logged with
its traceback, counted in `escalator_task_restarts_total{task}`, and started again after a back-off
that grows from 0.5 s to 30 s and starts over once the task has run for a minute without failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("escalator.supervisor")

FIRST_DELAY, MAX_DELAY, HEALTHY_AFTER = 0.5, 30.0, 60.0


@dataclass
class TaskState:
    running: bool = False
    finished: bool = False  # returned: its job is done (NATS connected, or the daemon stopping)
    restarts: int = 0
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.running or self.finished, "restarts": self.restarts}
        if self.last_error:
            out["last_error"] = self.last_error
        return out


class Supervisor:
    def __init__(self, stop: asyncio.Event, on_restart: Callable[[str], None] = lambda name: None):
        self.stop = stop
        self.on_restart = on_restart
        self.states: dict[str, TaskState] = {}

    def start(self, name: str, run: Callable[[], Awaitable[Any]], until: asyncio.Event | None = None) -> asyncio.Task[None]:
        """Run `run()` as task `name` until it returns; restart it when it raises, unless `until`
        (default: the daemon's stop) is set by then."""
        state = self.states[name] = TaskState()
        return asyncio.create_task(self._keep(name, run, state, until or self.stop), name=name)

    async def _keep(self, name: str, run: Callable[[], Awaitable[Any]], state: TaskState, until: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        delay = FIRST_DELAY
        while True:
            started = loop.time()
            state.running = True
            try:
                await run()
                state.finished = True
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.restarts += 1
                state.last_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                if loop.time() - started > HEALTHY_AFTER:
                    delay = FIRST_DELAY
                log.exception("task %s failed (%s); restarting in %.1fs", name, state.last_error, delay)
                self.on_restart(name)
            finally:
                state.running = False
            if until.is_set():
                return
            try:
                await asyncio.wait_for(until.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, MAX_DELAY)

    def report(self) -> dict[str, dict[str, Any]]:
        return {name: state.to_dict() for name, state in self.states.items()}
