"""The daemon as an operator meets it: embedded NATS, HTTP endpoints, starting while NATS is down."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path


from tests.recording import RecordingChannel
from escalator.metrics import Metrics
from escalator.web import HttpServer, create_app
from tests.harness import DaemonProcess, NatsServer, eventually, free_port, publish, running_daemon, settings_for
from tests.test_engine import ladders, urgent  # noqa: F401 - fixture


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.3).close()
        return True
    except OSError:
        return False


def test_run_with_embedded_nats_starts_serves_and_stops_it(ladders, db_url, tmp_path: Path) -> None:
    nats_port, http_port = free_port(), free_port()
    env = {
        "ESCALATOR_DATABASE_URL": db_url, "ESCALATOR_NATS_URL": f"nats://127.0.0.1:{nats_port}",
        "ESCALATOR_HTTP_PORT": str(http_port), "ESCALATOR_DATA_DIR": str(tmp_path / "data"), "ESCALATOR_DRY_RUN": "true",
    }
    daemon = DaemonProcess(env, tmp_path / "daemon.log", ("run", "--embedded-nats"))
    daemon.env["PATH"] = ""  # proves the nats-server beside this Python is found without PATH
    try:
        daemon.start()
        assert port_open(nats_port)
        assert (tmp_path / "data" / "nats" / "jetstream").is_dir()  # JetStream stores in the data dir
        asyncio.run(publish(f"nats://127.0.0.1:{nats_port}", "incidents.urgent", urgent("emb-1", "slow")))
        from escalator.store.incidents import IncidentStore

        asyncio.run(eventually(lambda: IncidentStore(ladders.engine).get("emb-1") is not None))
    finally:
        assert daemon.terminate() == 0
    log = daemon.log.read_text()
    assert "embedded NATS JetStream started" in log and "escalator stopped" in log
    assert "+14155550101" not in log and "DRY-RUN page voice to alice (+1415*****01)" in log
    asyncio.run(eventually(lambda: not port_open(nats_port), timeout=10))  # the embedded server went with it


def test_http_endpoints(ladders, db_url, tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    server.start()
    recorder = RecordingChannel("all")

    async def scenario():
        settings = settings_for(db_url, server.url, tmp_path / "data", window_scale=0.2)
        async with running_daemon(settings, recorder) as daemon:
            await publish(server.url, "incidents.urgent", urgent("http-1", "slow"))
            await recorder.wait_for(3)

            async def metrics_show_pages() -> bool:
                page = await asyncio.to_thread(get, f"http://127.0.0.1:{settings.http_port}/metrics")
                return b'escalator_pages_total{channel="push",outcome="sent"} 1.0' in page[1]

            await eventually(metrics_show_pages)
            base = f"http://127.0.0.1:{settings.http_port}"
            health = await asyncio.to_thread(get, base + "/healthz")
            ready = await asyncio.to_thread(get, base + "/readyz")
            metrics = await asyncio.to_thread(get, base + "/metrics")
            server.stop()  # NATS down: reported, but still ready
            await eventually(lambda: not daemon.nats.is_connected)
            degraded = await asyncio.to_thread(get, base + "/readyz")
            return health, ready, metrics, degraded

    try:
        health, ready, metrics, degraded = asyncio.run(scenario())
    finally:
        server.stop()
    assert health == (200, b"ok\n")
    status, body = ready
    data = json.loads(body)
    assert status == 200 and data["database"] == {"ok": True} and data["nats"] == {"ok": True}
    assert data["windows_armed"] == 1 and data["channels"]["sms"] == "RecordingChannel"
    text = metrics[1].decode()
    for line in (
        "escalator_incidents_opened_total 1.0",
        'escalator_pages_total{channel="voice",outcome="sent"} 1.0',
        "escalator_window_lateness_seconds_bucket",
        "escalator_open_incidents",
        "escalator_messages_rejected_total 0.0",
    ):
        assert line in text, line
    status, body = degraded
    assert status == 200 and json.loads(body)["nats"]["ok"] is False and json.loads(body)["database"]["ok"] is True


def test_readiness_is_503_when_the_database_is_down() -> None:
    async def down() -> dict:
        return {"database": {"ok": False, "error": "OperationalError"}, "nats": {"ok": True}}

    async def scenario():
        port = free_port()
        server = HttpServer(create_app(down, Metrics().registry), "127.0.0.1", port)
        await server.start()
        try:
            return (
                await asyncio.to_thread(get, f"http://127.0.0.1:{port}/readyz"),
                await asyncio.to_thread(get, f"http://127.0.0.1:{port}/healthz"),
            )
        finally:
            await server.stop()

    (status, body), (health, _) = asyncio.run(scenario())
    assert status == 503 and json.loads(body)["database"]["ok"] is False
    assert health == 200  # alive, just not ready


def test_daemon_starts_while_nats_is_down_and_catches_up(ladders, db_url, tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")  # not started yet
    recorder = RecordingChannel("all")

    async def scenario():
        settings = settings_for(db_url, server.url, tmp_path / "data", window_scale=0.2)
        daemon_task = None
        from escalator.daemon import Daemon

        daemon = Daemon(settings, channels={"voice": recorder, "sms": recorder, "push": recorder})
        daemon_task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 15)
        ready = await daemon.readiness()
        assert ready["database"]["ok"] and not ready["nats"]["ok"]
        await asyncio.to_thread(server.start)
        await eventually(lambda: daemon.ingest.js is not None, timeout=20)
        await publish(server.url, "incidents.urgent", urgent("late-1", "slow"))
        await recorder.wait_for(3, timeout=15)
        daemon.stop()
        await asyncio.wait_for(daemon_task, 30)

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
    assert {p.page.incident_id for p in recorder.pages} == {"late-1"}


def test_a_slow_stale_window_never_makes_the_scheduler_drop_the_next_one() -> None:
    from datetime import timedelta

    from escalator import clock
    from escalator.windows import Windows

    fired: list[tuple[int, int]] = []
    release = asyncio.Event()

    async def on_expire(incident_id, cycle, leg_index, deadline) -> None:
        fired.append((cycle, leg_index))
        if leg_index == 0:
            await release.wait()  # a stale run stuck on the database

    async def scenario() -> None:
        windows = Windows(on_expire, now=clock.now)
        windows.start()
        windows.arm("inc", clock.now(), 1, 0)
        await eventually(lambda: fired == [(1, 0)])
        windows.arm("inc", clock.now() + timedelta(milliseconds=100), 1, 1)  # the next leg's window
        await eventually(lambda: (1, 1) in fired, timeout=5)
        release.set()
        windows.shutdown()

    asyncio.run(scenario())
    assert fired == [(1, 0), (1, 1)]


def test_repeated_form_parameters_are_signed_with_all_their_values() -> None:
    import aiohttp
    from multidict import MultiDict
    from twilio.request_validator import RequestValidator

    class Hooks:
        async def sms(self, phone, body, sid, to=""):
            return f"got {body}"

    async def scenario():
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        server = HttpServer(create_app(_never_ready, Metrics().registry, Hooks(), "token", public), "127.0.0.1", port)
        await server.start()
        try:
            form = MultiDict([("MessageSid", "SM1"), ("From", "+14155550101"), ("Body", "first"), ("Body", "ACK 1234")])
            signature = RequestValidator("token").compute_signature(public + "/twilio/sms", form)
            async with aiohttp.ClientSession() as session:
                async with session.post(public + "/twilio/sms", data=list(form.items()), headers={"X-Twilio-Signature": signature}) as r:
                    return r.status, await r.text()
        finally:
            await server.stop()

    status, body = asyncio.run(scenario())
    assert status == 200 and "got ACK 1234" in body


async def _never_ready() -> dict:
    return {"database": {"ok": True}}
