"""Fault injection: a private PostgreSQL (initdb in a temp dir, on a free port; never the machine's shared
service) is stopped for a few seconds mid-walk and started again. The daemon does not crash, loses no
state, and every walk resumes: windows that came due during the outage fire once it is back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from escalator import clock, ladder_files
from tests.recording import RecordingChannel
from escalator.store import migrate
from escalator.store.catalog import Catalog
from escalator.store.db import make_engine
from tests.conftest import write
from tests.harness import eventually, free_port, publish, running_daemon
from tests.test_engine import PEOPLE, nats_server, settings, urgent  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

OUTAGE_S = 6.0


def pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None)
    assert found, f"{name} (PostgreSQL server binaries) is required for this test"
    return str(found)


class PrivatePostgres:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="escalator-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.run(pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def run(self, *args: str) -> None:
        subprocess.run([*self.as_postgres, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self.run(pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self.run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    pg.start()
    yield pg
    pg.remove()


def test_postgres_restarted_mid_walk_loses_nothing(private_postgres, nats_server, tmp_path) -> None:
    db = make_engine(private_postgres.url)
    migrate.upgrade(db)
    Catalog(db).apply(ladder_files.load([write(tmp_path / "people.yaml", PEOPLE)]), "test", clock.now())
    db.dispose()
    recorder = RecordingChannel("all")

    async def scenario():
        async with running_daemon(settings(private_postgres.url, nats_server, tmp_path), recorder) as daemon:
            await publish(nats_server.url, "incidents.urgent", urgent("inc-pg"), "inc-pg")  # the night ladder: 1 s windows
            await recorder.wait_for(3)
            due = daemon.store.get("inc-pg").deadline
            await asyncio.to_thread(private_postgres.stop)
            down_at = time.monotonic()
            await publish(nats_server.url, "incidents.urgent", urgent("inc-during"), "inc-during")
            during = await daemon.readiness()
            await asyncio.sleep(OUTAGE_S)
            await asyncio.to_thread(private_postgres.start)
            outage = time.monotonic() - down_at
            # (the incident published during the outage may not be opened yet when PostgreSQL is back)
            await eventually(lambda: all((row := daemon.store.get(i)) is not None and row.status == "exhausted"
                                         for i in ("inc-pg", "inc-during")), timeout=60)
            after = await daemon.readiness()
            alive = not daemon.stop_event.is_set()
            ids = ("inc-pg", "inc-during")
            await eventually(lambda: all(len(daemon.store.pages(i)) == 16 and {p.status for p in daemon.store.pages(i)} == {"sent"} for i in ids), timeout=30)
            pages = {i: daemon.store.pages(i) for i in ids}
            return due, during, after, outage, alive, {i: daemon.store.timeline(i)[0] for i in ids}, pages

    due, during, after, outage, alive, timelines, pages = asyncio.run(scenario())
    assert alive and not during["database"]["ok"] and after["database"]["ok"]
    for incident_id, events in timelines.items():
        legs = [(e.data["cycle"], e.data["leg_index"]) for e in events if e.event == "leg_started"]
        assert legs == [(1, 0), (1, 1), (1, 2)], (incident_id, legs)  # nothing skipped, nothing repeated
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        sent = [e for e in events if e.event == "page_sent"]
        assert len(sent) == len(pages[incident_id]) == 16, incident_id  # 8 on the legs, 8 more on exhaustion
        assert {p.status for p in pages[incident_id]} == {"sent"}  # each recorded once, none lost
    second = next(e for e in timelines["inc-pg"] if e.event == "leg_started" and e.data["leg_index"] == 1)
    late = (second.at - due).total_seconds()
    assert late < outage + 5  # the window that came due during the outage fired once PostgreSQL was back
    print(f"\nPostgreSQL down {outage:.1f}s mid-walk: no crash, 2 incidents (one published during the outage) "
          f"walked to the end, the window due during the outage fired {late:.1f}s late")
