"""Long-running tasks that fail are restarted, logged and counted (SPEC §3: ingest restarts itself)."""

from __future__ import annotations

import asyncio
import logging

from escalator import supervisor
from escalator.supervisor import Supervisor


def test_a_failing_task_is_restarted_logged_and_counted(caplog, monkeypatch) -> None:
    monkeypatch.setattr(supervisor, "FIRST_DELAY", 0.01)
    restarted: list[str] = []
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise ValueError("boom")
        await asyncio.sleep(3600)

    async def scenario():
        stop = asyncio.Event()
        keeper = Supervisor(stop, on_restart=restarted.append)
        task = keeper.start("ingest", flaky)
        for _ in range(200):
            if len(runs) == 3:
                break
            await asyncio.sleep(0.01)
        report = keeper.report()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return report

    with caplog.at_level(logging.ERROR, logger="escalator.supervisor"):
        report = asyncio.run(scenario())
    assert len(runs) == 3 and restarted == ["ingest", "ingest"]
    assert report["ingest"] == {"ok": True, "restarts": 2, "last_error": "ValueError: boom"}
    failures = [r for r in caplog.records if "task ingest failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None  # with its traceback


def test_a_task_that_returns_is_done_and_stop_ends_the_restarts() -> None:
    async def scenario():
        stop = asyncio.Event()
        keeper = Supervisor(stop)
        done = keeper.start("nats", lambda: asyncio.sleep(0))
        await done

        async def fails() -> None:
            stop.set()
            raise RuntimeError("late")

        await asyncio.wait_for(keeper.start("outbox", fails), 2)  # not restarted once stopping
        return keeper.report()

    report = asyncio.run(scenario())
    assert report["nats"] == {"ok": True, "restarts": 0}
    assert report["outbox"]["ok"] is False and report["outbox"]["restarts"] == 1
