"""A commit PostgreSQL kept but whose answer was lost (the connection dropped after COMMIT reached the
server): the step's decisions are in the database, its commands (the next leg's window and pages)
were never carried out. Before, nothing drove the incident again until a restart and the walk
silently stopped; now the engine re-adopts it from what the database holds. Real PostgreSQL behind
a proxy that drops the connection right after a COMMIT, real nats-server, the real daemon."""

from __future__ import annotations

import asyncio

import pytest

from escalator import clock, ladder_files
from escalator.store import migrate
from escalator.store.catalog import Catalog
from escalator.store.db import make_engine
from escalator.store.incidents import IncidentStore
from tests.conftest import write
from tests.harness import eventually, publish, running_daemon, settings_for
from tests.pg_proxy import CommitDroppingProxy
from tests.recording import RecordingChannel
from tests.test_engine import PEOPLE, nats_server, urgent  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def test_a_commit_whose_answer_was_lost_does_not_stop_the_walk(pg_url, nats_server, tmp_path) -> None:
    direct = make_engine(pg_url)
    migrate.upgrade(direct)
    Catalog(direct).apply(ladder_files.load([write(tmp_path / "people.yaml", PEOPLE)]), "test", clock.now())
    recorder = RecordingChannel("all")
    store = IncidentStore(direct)  # the test reads past the proxy: it runs in this event loop

    def events(daemon) -> list[str]:
        return [e.event for e in store.timeline("uc-1")[0]]

    async def scenario():
        async with CommitDroppingProxy() as proxy:
            settings = settings_for(proxy.url(pg_url), nats_server.url, tmp_path / "data", window_scale=0.4)  # 2 s legs
            async with running_daemon(settings, recorder) as daemon:
                await publish(nats_server.url, "incidents.urgent", urgent("uc-1"))
                await eventually(lambda: events(daemon).count("page_sent") == 3, timeout=10)  # alice's leg, all recorded
                proxy.armed = True  # the next step that moves the walk commits, but its answer is lost
                await eventually(lambda: proxy.dropped == 1, timeout=10)
                await eventually(lambda: any(p.page.contact.id == "bob" for p in recorder.pages), timeout=10)
                await eventually(lambda: "exhausted" in events(daemon) or events(daemon).count("leg_started") >= 3, timeout=15)
                return events(daemon), [(p.page.contact.id, p.page.channel) for p in recorder.pages], daemon.engine.windows.armed()

    try:
        timeline, paged, armed = asyncio.run(scenario())
    finally:
        direct.dispose()
    assert timeline.count("leg_started") >= 3  # the walk went on: secondary, then fallback
    assert paged.count(("bob", "voice")) == 1 and paged.count(("bob", "sms")) == 1  # bob's pages: sent once
    print(f"\nuncertain commit: the walk went on ({timeline.count('leg_started')} legs started), bob paged once per channel")
