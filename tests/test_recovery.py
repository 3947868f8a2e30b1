"""Crashes and outages: kill -9 of a real daemon process mid-leg; NATS restarted mid-walk."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.recording import RecordingChannel
from escalator.store.incidents import IncidentStore
from tests.harness import DaemonProcess, eventually, free_port, publish, running_daemon, stream_events
from tests.test_engine import PEOPLE, ladders, nats_server, settings, urgent  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

SCALE = "0.4"  # the night ladder's 5 s windows become 2 s


def events_of(store: IncidentStore, incident_id: str):
    return store.timeline(incident_id)[0]


def daemon_process(db_url: str, nats_server, tmp_path: Path, scale: str = SCALE) -> DaemonProcess:
    env = {
        "ESCALATOR_DATABASE_URL": db_url, "ESCALATOR_NATS_URL": nats_server.url, "ESCALATOR_HTTP_PORT": str(free_port()),
        "ESCALATOR_DATA_DIR": str(tmp_path / "data"), "ESCALATOR_WINDOW_SCALE": scale, "ESCALATOR_DRY_RUN": "true",
        # A container restarted in its pod keeps its name, so it takes its own leases back at once
        # (a replica under a new name waits for them to run out: tests/test_replicas.py).
        "ESCALATOR_REPLICA_ID": "pod-a",
    }
    return DaemonProcess(env, tmp_path / "daemon.log")


@pytest.mark.parametrize("restart_after_deadline", [False, True], ids=["restart-before-deadline", "restart-after-deadline"])
def test_kill9_mid_leg_continues_at_the_right_leg(ladders, db_url, nats_server, tmp_path, restart_after_deadline) -> None:
    store = IncidentStore(ladders.engine)
    # Restarting before the deadline needs a window longer than a restart takes: the real 5 s one.
    daemon = daemon_process(db_url, nats_server, tmp_path, SCALE if restart_after_deadline else "1.0")
    daemon.start()
    try:
        asyncio.run(publish(nats_server.url, "incidents.urgent", urgent("inc-crash"), "inc-crash"))
        asyncio.run(eventually_sync(lambda: [e.event for e in events_of(store, "inc-crash")].count("page_sent") == 3))
        first_deadline = store.get("inc-crash").deadline
        time.sleep(0.5)
        daemon.kill9()  # mid-leg: primary has been paged, its 2 s window is running
        killed_at = time.time()
        if restart_after_deadline:
            time.sleep(max(first_deadline.timestamp() - time.time(), 0) + 1.0)
        restarted_at = time.time()  # the new process is launched now; recovery runs before it reports ready
        daemon.start()
        ready_at = time.time()
        def second_leg_paged() -> bool:
            return [(e.event, e.data.get("leg_index")) for e in events_of(store, "inc-crash")].count(("page_sent", 1)) == 2

        asyncio.run(eventually_sync(second_leg_paged, timeout=30))
        time.sleep(0.3)
    finally:
        assert daemon.terminate() == 0, (tmp_path / "daemon.log").read_text()[-2000:]

    events = events_of(store, "inc-crash")
    legs = [(e.data["cycle"], e.data["leg_index"]) for e in events if e.event == "leg_started"]
    assert legs[:2] == [(1, 0), (1, 1)] and len(legs) == len(set(legs))  # no leg skipped or repeated, no restart
    second = next(e for e in events if e.event == "leg_started" and e.data["leg_index"] == 1)
    # The window fires at its original deadline, or at once on start when that has passed — never a
    # new window from the restart (5 s, or 2 s scaled, later). Bounds: start-up under a loaded
    # machine (the parallel suite) takes seconds of its own.
    fired = second.at.timestamp()
    if restart_after_deadline:
        assert restarted_at <= fired <= ready_at + 2.0, (restarted_at, fired, ready_at)
    else:
        assert restarted_at < first_deadline.timestamp() <= fired <= max(first_deadline.timestamp(), ready_at) + 2.0
    sent = [(e.data["leg_index"], e.data["contact"], e.data["channel"]) for e in events if e.event == "page_sent"]
    assert sorted(s for s in sent if s[0] == 0) == [(0, "alice", "push"), (0, "alice", "sms"), (0, "alice", "voice")]
    assert sorted(s for s in sent if s[0] == 1) == [(1, "bob", "sms"), (1, "bob", "voice")]
    assert len(sent) == len(set(sent))  # nothing paged twice
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert killed_at < restarted_at


async def eventually_sync(check, timeout: float = 15.0):
    return await eventually(check, timeout)


def test_nats_restart_mid_walk_loses_no_event(ladders, db_url, nats_server, tmp_path) -> None:
    recorder = RecordingChannel("all")

    async def scenario():
        async with running_daemon(settings(db_url, nats_server, tmp_path), recorder) as daemon:
            await publish(nats_server.url, "incidents.urgent", urgent("inc-nats"), "inc-nats")
            await recorder.wait_for(3)
            nats_server.stop()  # NATS gone mid-walk: windows keep firing, pages keep going out
            await recorder.wait_for(3 + 2 + 3, timeout=10)
            assert daemon.outbox.waiting(1000)  # events wait in the outbox
            ready = await daemon.readiness()
            assert ready["database"]["ok"] and not ready["nats"]["ok"]
            await asyncio.sleep(0.5)
            nats_server.start()
            await eventually(lambda: daemon.store.get("inc-nats").status == "exhausted", timeout=20)
            await eventually(lambda: [e.event for e in daemon.store.timeline("inc-nats")[0]].count("page_sent") == 16)
            await eventually(lambda: not daemon.outbox.waiting(1), timeout=30)
            # and a new incident published after the outage walks too
            await publish(nats_server.url, "incidents.urgent", urgent("inc-after", "slow"), "inc-after")
            await eventually(lambda: any(p.page.incident_id == "inc-after" for p in recorder.pages), timeout=20)
            return daemon.store.timeline("inc-nats")[0]

    timeline = run(scenario())
    events = [e for e in asyncio.run(stream_events(nats_server.url)) if e.get("incident_id") == "inc-nats"]
    assert [e["seq"] for e in events] == [e.seq for e in timeline] == list(range(1, len(timeline) + 1))


def run(coro):
    return asyncio.run(coro)
