"""A three-node NATS cluster on loopback with R3 streams: losing one node loses no incident."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from tests.recording import RecordingChannel
from tests.harness import NatsCluster, eventually, running_daemon, settings_for
from tests.test_engine import ladders, urgent  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


async def publish_any(urls: list[str], subject: str, body: dict, msg_id: str) -> None:
    """A retrying publisher, as the call-handling system should be: same Nats-Msg-Id on every try."""
    for _ in range(40):
        try:
            nc = await nats.connect(servers=urls, connect_timeout=1, max_reconnect_attempts=1, allow_reconnect=False)
            try:
                await nc.jetstream().publish(subject, json.dumps(body).encode(), headers={"Nats-Msg-Id": msg_id}, timeout=3)
                return
            finally:
                await nc.close()
        except Exception:
            await asyncio.sleep(0.25)
    raise AssertionError(f"could not publish {msg_id}")


def test_losing_one_node_of_three_loses_no_incident(ladders, db_url, tmp_path) -> None:
    cluster = NatsCluster(tmp_path / "cluster")
    cluster.start_all()
    recorder = RecordingChannel("all")

    async def scenario():
        settings = settings_for(db_url, ",".join(cluster.urls), tmp_path / "data", window_scale=0.2, nats_stream_replicas=3)
        async with running_daemon(settings, recorder) as daemon:
            await eventually(lambda: daemon.nats is not None, timeout=30)
            nc = await nats.connect(servers=cluster.urls)
            info = await nc.jetstream().stream_info("INCIDENTS")
            replicas = info.config.num_replicas
            await nc.close()
            await publish_any(cluster.urls, "incidents.urgent", urgent("c-0", "slow"), "c-0")
            await recorder.wait_for(3, timeout=15)
            # stop the node the daemon is connected to
            port = daemon.nats.connected_url.port
            victim = cluster.client_ports.index(port)
            cluster.stop(victim)
            others = [u for i, u in enumerate(cluster.urls) if i != victim]
            for i in range(1, 6):
                await publish_any(others, "incidents.urgent", urgent(f"c-{i}", "slow"), f"c-{i}")
            await eventually(lambda: {f"c-{i}" for i in range(6)} <= {p.page.incident_id for p in recorder.pages}, timeout=45)
            await eventually(lambda: not daemon.outbox.waiting(1), timeout=30)
            nc = await nats.connect(servers=others)
            js = nc.jetstream()
            seen = set()
            info = await js.stream_info("ESCALATIONS")
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                message = json.loads((await js.get_msg("ESCALATIONS", seq)).data)
                if message.get("event") == "opened":
                    seen.add(message["incident_id"])
            await nc.close()
            return replicas, seen

    try:
        replicas, opened = asyncio.run(scenario())
    finally:
        cluster.stop_all()
    assert replicas == 3
    assert opened == {f"c-{i}" for i in range(6)}  # every incident walked, and its events reached the stream
