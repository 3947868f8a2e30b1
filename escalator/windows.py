"""Acknowledgment windows on APScheduler 3 (AsyncIOScheduler).

The database holds every deadline; this only keeps one timer per open incident in memory and is
re-armed from the database on start. `misfire_grace_time=None`: a window that fires late (a stalled
loop, a restart) still fires; APScheduler's default would silently drop it (NOTES).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

OnExpire = Callable[[str, int, int, datetime], Awaitable[None]]


class Windows:
    def __init__(self, on_expire: OnExpire):
        self._on_expire = on_expire
        # max_instances: a slow, stale run for an incident must never make APScheduler skip (and so
        # drop) that incident's next window; the walk ignores stale windows, so overlap is harmless.
        self._scheduler = AsyncIOScheduler(
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1000}
        )

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def arm(self, incident_id: str, deadline: datetime, cycle: int, leg_index: int, only_if_newer: bool = False) -> None:
        if only_if_newer:  # a walk's windows only move forward in (cycle, leg)
            job = self._scheduler.get_job(incident_id)
            if job is not None and tuple(job.args[1:3]) >= (cycle, leg_index):
                return
        self._scheduler.add_job(
            self._on_expire, "date", run_date=deadline, id=incident_id, replace_existing=True,
            args=[incident_id, cycle, leg_index, deadline],
        )

    def cancel(self, incident_id: str) -> None:
        try:
            self._scheduler.remove_job(incident_id)
        except JobLookupError:
            pass

    def armed(self) -> int:
        return len(self._scheduler.get_jobs())
