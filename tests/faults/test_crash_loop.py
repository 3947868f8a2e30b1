"""Fault injection: a crash loop. 50 escalations walk while the daemon is killed with SIGKILL 10 times
at random moments (restarted under the same replica name, as Kubernetes restarts a container).
Guarantees: no incident lost, no leg skipped or repeated, each page sent at most once more per crash."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter

import pytest

from escalator.store.incidents import IncidentStore
from tests.harness import DaemonProcess, eventually, free_port, publish
from tests.test_engine import ladders, nats_server, urgent  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

INCIDENTS, CRASHES = 50, 10
PAGE_LINE = re.compile(r"DRY-RUN page (\w+) to (\w+) \(.*?\) for incident (\S+), leg (\w+)")


def test_ten_kill9_across_fifty_escalations_lose_and_skip_nothing(ladders, db_url, nats_server, tmp_path) -> None:
    rng = random.Random(20261122)
    env = {
        "ESCALATOR_DATABASE_URL": db_url, "ESCALATOR_NATS_URL": nats_server.url, "ESCALATOR_HTTP_PORT": str(free_port()),
        "ESCALATOR_DATA_DIR": str(tmp_path / "data"), "ESCALATOR_DRY_RUN": "true", "ESCALATOR_REPLICA_ID": "pod-crashy",
        "ESCALATOR_WINDOW_SCALE": "0.4",  # the night ladder: three 2 s legs, one cycle, then exhausted
    }
    log = tmp_path / "daemon.log"
    daemon = DaemonProcess(env, log)
    store = IncidentStore(ladders.engine)
    ids = [f"inc-loop-{i}" for i in range(INCIDENTS)]
    daemon.start()

    async def publish_all() -> None:
        for incident_id in ids:
            await publish(nats_server.url, "incidents.urgent", urgent(incident_id), incident_id)
            await asyncio.sleep(0.02)

    started = time.monotonic()
    publisher = None
    try:
        loop = asyncio.new_event_loop()
        publisher = loop.create_task(publish_all())
        for _ in range(CRASHES):
            loop.run_until_complete(asyncio.sleep(rng.uniform(0.2, 1.5)))  # publishing goes on meanwhile
            daemon.kill9()
            loop.run_until_complete(asyncio.sleep(rng.uniform(0.0, 0.5)))
            daemon.start()
        loop.run_until_complete(publisher)
        done = {"exhausted"}
        loop.run_until_complete(eventually(lambda: all((r := store.get(i)) and r.status in done for i in ids), timeout=90, interval=0.2))
        loop.close()
    finally:
        assert daemon.terminate() == 0, log.read_text()[-3000:]
    took = time.monotonic() - started

    lost = [i for i in ids if store.get(i) is None]
    skipped = repeated = 0
    for incident_id in ids:
        legs = [(e.data["cycle"], e.data["leg_index"]) for e in store.timeline(incident_id)[0] if e.event == "leg_started"]
        skipped += len({(1, 0), (1, 1), (1, 2)} - set(legs))
        repeated += len(legs) - len(set(legs))
        seqs = [e.seq for e in store.timeline(incident_id)[0]]
        assert seqs == list(range(1, len(seqs) + 1)), incident_id  # a dense, gap-free timeline
    sends = Counter(PAGE_LINE.search(line).groups() for line in log.read_text().splitlines() if PAGE_LINE.search(line))
    expected = INCIDENTS * (3 + 2 + 3)  # alice: voice, SMS, push; bob: voice, SMS; carol: SMS; dave: SMS, push
    # each (channel, contact, incident, leg) is paged twice in a normal walk: on its leg, and again when
    # the ladder is exhausted ("page everyone once more"); anything beyond that is a crash's re-send
    duplicates = sum(max(n - 2, 0) for n in sends.values())
    gave_up = sum(1 for i in ids for p in store.pages(i) if p.reason and "not confirmed after a re-send" in p.reason)
    print(f"\ncrash loop: {CRASHES} kill -9 across {INCIDENTS} escalations in {took:.1f}s: lost {len(lost)}, "
          f"legs skipped {skipped}, legs repeated {repeated}, pages {len(sends)} of {expected}, "
          f"duplicate sends {duplicates} (most for one page: {max(sends.values()) - 2}), "
          f"pages given up after a re-send {gave_up}")
    assert lost == [] and skipped == 0 and repeated == 0
    assert len(sends) == expected  # every page went out
    assert max(sends.values()) <= 2 + 1  # a page is re-sent at most once, however many crashes
