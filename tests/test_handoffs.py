"""Hand-over notices (SPEC §10): one per hand-over across replicas, late rather than never, never twice.
Two daemons on one PostgreSQL and a real nats-server, each with its own recording channel."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from escalator import clock, ladder_files
from escalator.store.catalog import Catalog
from escalator.store.db import make_engine
from escalator.store import migrate
from tests.conftest import write
from tests.harness import eventually, running_daemon, settings_for
from tests.recording import RecordingChannel
from tests.test_engine import nats_server  # noqa: F401 - fixture


def rota(now) -> str:
    # 1 h turns that began 30 minutes ago: alice came on call then (a daemon that was not running
    # at that moment still owes her the notice); the quiet schedule sends none.
    start = (now - timedelta(minutes=30)).astimezone(ZoneInfo("America/Chicago")).strftime("%Y-%m-%d %H:%M")
    return f"""\
contacts:
  - {{id: alice, name: Alice, phone: "+14155550101"}}
  - {{id: pat, name: Pat, push_tokens: ["tok-pat"]}}
---
schedule: techs
timezone: America/Chicago
notify_handoff: true
rotations:
  - {{name: hourly, contacts: [alice, pat], shift: 1h, start: "{start}"}}
---
schedule: quiet
rotations:
  - {{name: always, contacts: [alice], shift: 1w, start: "2026-11-30 08:00"}}
"""


def test_hand_over_notices_go_once_across_two_replicas_and_not_again_after_a_restart(pg_url, nats_server, tmp_path: Path) -> None:
    db = make_engine(pg_url)
    migrate.upgrade(db)
    catalog = Catalog(db)
    now = clock.now()
    catalog.apply(ladder_files.load([write(tmp_path / "rota.yaml", rota(now))]), "test", now)
    recorders = [RecordingChannel("all"), RecordingChannel("all")]

    async def both(seconds: float) -> None:
        async with contextlib.AsyncExitStack() as stack:
            for i, recorder in enumerate(recorders):
                settings = settings_for(pg_url, nats_server.url, tmp_path / f"data{i}", replica_id=f"r{i}")
                await stack.enter_async_context(running_daemon(settings, recorder))
            await eventually(lambda: sum(len(r.notices) for r in recorders) >= 1, timeout=20)
            await asyncio.sleep(seconds)  # every replica has scanned by now (each scans at start)

    asyncio.run(both(1.0))
    notices = [n for r in recorders for n in r.notices]
    assert len(notices) == 1, notices
    contact, about, text = notices[0]
    assert contact == "alice" and about == ""  # about no incident
    assert text.startswith("You are on call for techs from ") and text.endswith(("CST.", "CDT."))
    with db.connect() as c:
        rows = c.execute(sa.text("SELECT contact, status, channel, claimed_by FROM handoff_notices")).all()
    assert [(r.contact, r.status, r.channel) for r in rows] == [("alice", "sent", "sms")]
    # restarted: the same hand-over is not notified again
    for r in recorders:
        r.notices.clear()

    async def again() -> None:
        settings = settings_for(pg_url, nats_server.url, tmp_path / "data-again", replica_id="r2")
        async with running_daemon(settings, recorders[0]) as daemon:
            assert await daemon.handoffs.scan() == 0

    asyncio.run(again())
    assert recorders[0].notices == []
    db.dispose()
