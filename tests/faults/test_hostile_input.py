"""Hostile input against the real daemon, only through its public doors, on both databases.

- NATS: messages a parser chokes on (deep nesting, huge or non-finite numbers) are each rejected
  with a reason; ingest keeps going and the next valid incident is paged at once.
- HTTP: a flood of unsigned requests with 10,000 fields each, bodies of hundreds of megabytes and hundreds of
  slow connections, all at once, against `escalator run` as a subprocess: /healthz answers within
  2 s throughout (a few ms alone; the bound is for CI's six workers on two cores, and the frozen loop
  this guards against held it for 11 s and more), a leg's window that falls due meanwhile fires on time, memory stays bounded,
  the slow connections are closed after 30 s, and every log line stays JSON with numbers masked.
(A replayed SMS or key press: tests/test_twilio.py. An unauthorised NATS client: test_nats_trust.py.)
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import timedelta

import nats
import pytest

from tests.recording import RecordingChannel
from escalator.store.db import make_engine
from escalator.store.incidents import IncidentStore
from tests.harness import DaemonProcess, eventually, free_port, publish, running_daemon, stream_events
from tests.test_engine import ladders, nats_server, settings, urgent  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def _deep(levels: int) -> bytes:
    return b'{"id": "deep-%d", "ladder": "night", "summary": "x", "details": ' % levels + b'{"a": ' * levels + b"1" + b"}" * levels + b"}"


POISON: list[tuple[bytes, str]] = [
    (_deep(990), "nested deeper than 32 levels"),  # 2 KB: RecursionError in the decoder
    (_deep(40), "nested deeper than 32 levels"),
    (b'{"id": "big-int", "ladder": "night", "summary": "x", "details": {"n": ' + b"9" * 4400 + b"}}", "characters long"),
    (b'{"id": "nan", "ladder": "night", "summary": "x", "details": {"n": NaN}}', "NaN is not a JSON number"),
    (b'{"id": "inf", "ladder": "night", "summary": "x", "details": {"n": -Infinity}}', "-Infinity is not a JSON number"),
    (b'{"id": "huge-float", "ladder": "night", "summary": "x", "details": {"n": 1e400}}', "out of range"),
    (b"[" * 20000 + b"]" * 20000, "nested deeper than 32 levels"),
    (b'{"id": "ok-then-deep", "ladder": "night", "summary": "x", "details": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     "nested deeper than 32 levels"),
]


def test_messages_a_parser_chokes_on_never_stop_ingest(ladders, db_url, nats_server, tmp_path) -> None:
    recorder = RecordingChannel("all")

    async def scenario():
        async with running_daemon(settings(db_url, nats_server, tmp_path), recorder) as daemon:
            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            for i, (body, _) in enumerate(POISON * 2):  # twice: a message that crashed ingest crashed it again
                await js.publish("incidents.urgent", body, headers={"Nats-Msg-Id": f"poison-{i}"}, timeout=10)
            published = time.monotonic()
            await js.publish("incidents.urgent", json.dumps(urgent("after-poison")).encode(), timeout=10)
            await eventually(lambda: any(r.page.incident_id == "after-poison" for r in recorder.pages), timeout=15)
            paged_after = time.monotonic() - published

            async def settled() -> bool:
                info = await js.consumer_info("INCIDENTS", "escalator")
                return info.num_ack_pending == 0 and info.num_pending == 0 and not daemon.outbox.waiting(1)

            await eventually(settled, timeout=20, interval=0.2)
            await nc.close()
            return paged_after, await daemon.readiness(), await stream_events(nats_server.url, "escalations.rejected")

    paged_after, ready, rejected = asyncio.run(scenario())
    reasons = [e["reason"] for e in rejected]
    assert len(reasons) == 2 * len(POISON)
    for _, words in POISON:
        assert sum(words in r for r in reasons) >= 2, (words, reasons)
    assert ready["tasks"]["ingest"] == {"ok": True, "restarts": 0}
    assert paged_after < 5
    print(f"\n{2 * len(POISON)} poison messages rejected with their reasons; the next incident paged {paged_after * 1000:.0f} ms after its publish")


# -- HTTP ---------------------------------------------------------------------------------------------

SLOW_CONNECTIONS = 300
ATTACK_S = 8.0


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection, or TimeoutError: a daemon whose loop is frozen stops accepting them."""
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)


async def _request(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    try:
        reader, writer = await _connect(port)
    except (ConnectionError, TimeoutError):
        return b""
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), timeout)
    except (ConnectionError, TimeoutError):
        return b""
    finally:
        writer.close()


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(100), 5) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def _health_probe(port: int, stop: asyncio.Event, latencies: list[float]) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        started = time.monotonic()
        answer = await _request(port, request, timeout=5)
        latencies.append(time.monotonic() - started if answer.startswith(b"HTTP/1.1 200") else 99.0)
        await asyncio.sleep(0.1)


def _name(i: int) -> bytes:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if not i:
            return out.encode()


async def _field_flood(port: int, stop: asyncio.Event, answers: list[bytes]) -> None:
    # 10,000 fields with distinct names in 50 KB: under the size limit, far over the field limit.
    # (Distinct names: the signature check once scanned every field for each name.)
    body = b"&".join(_name(i) + b"=" for i in range(10_000))
    request = (
        b"POST /twilio/sms HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"X-Twilio-Signature: forged\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    ) + body
    while not stop.is_set():
        answers.append((await _request(port, request))[:12])


async def _huge_body(port: int, stop: asyncio.Event, sent: list[int]) -> None:
    """400 MB, chunked, as fast as the server takes it: it must answer 413 and stop reading."""
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"z" * 64 * 1024)
    while not stop.is_set():
        try:
            reader, writer = await _connect(port)
        except (ConnectionError, TimeoutError):
            sent.append(-1)
            continue
        total = 0
        try:
            writer.write(b"POST /api/v1/incidents/x/ack HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            while total < 400 * 1024 * 1024 and not stop.is_set():
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 5)
                total += len(chunk)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            sent.append(total)
            writer.close()


def test_http_attacks_never_freeze_the_daemon(ladders, db_url, nats_server, tmp_path) -> None:
    port = free_port()
    log = tmp_path / "daemon.log"
    daemon = DaemonProcess({
        "ESCALATOR_DATABASE_URL": db_url, "ESCALATOR_NATS_URL": nats_server.url, "ESCALATOR_HTTP_PORT": str(port),
        "ESCALATOR_DATA_DIR": str(tmp_path / "data"), "ESCALATOR_DRY_RUN": "true", "ESCALATOR_LOG_FORMAT": "json",
        "ESCALATOR_TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "ESCALATOR_TWILIO_AUTH_TOKEN": "test-auth-token",
        "ESCALATOR_TWILIO_FROM": "+14155550100", "ESCALATOR_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }, log)
    daemon.start()

    async def scenario():
        stop = asyncio.Event()
        latencies: list[float] = []
        flood: list[bytes] = []
        sent: list[int] = []
        slow = []
        for _ in range(SLOW_CONNECTIONS):  # headers that never finish
            reader, writer = await _connect(port)
            writer.write(b"POST /twilio/sms HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append((reader, writer))
        slow_opened = time.monotonic()
        await publish(nats_server.url, "incidents.urgent", urgent("h-1", caller="+14155550123"))  # a 5 s first window
        tasks = [asyncio.create_task(_health_probe(port, stop, latencies))]
        tasks += [asyncio.create_task(_field_flood(port, stop, flood)) for _ in range(4)]
        tasks += [asyncio.create_task(_huge_body(port, stop, sent)) for _ in range(2)]
        garbage = [await _request(port, b"NOT HTTP AT ALL\r\n\r\n"), await _request(port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")]
        await asyncio.sleep(ATTACK_S)
        stop.set()
        await asyncio.gather(*tasks)
        # the slow connections: still open before 30 s, closed by the server after it
        await asyncio.sleep(max(0.0, slow_opened + 31 - time.monotonic()))
        closed = sum(await asyncio.gather(*(_closed_by_server(reader) for reader, _ in slow)))
        for _, writer in slow:
            writer.close()
        return latencies, flood, sent, closed, garbage

    try:
        latencies, flood, sent, closed, garbage = asyncio.run(scenario())
        with open(f"/proc/{daemon.process.pid}/status") as status:
            peak_mib = int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1)) / 1024
    finally:
        daemon.terminate()
    engine = make_engine(db_url)
    try:
        timeline = IncidentStore(engine).timeline("h-1")[0]
    finally:
        engine.dispose()
    started = next(e for e in timeline if e.event == "leg_started")
    timed_out = next(e for e in timeline if e.event == "leg_timed_out")
    late = timed_out.at - (started.at + timedelta(seconds=started.data["window_s"]))
    lines = log.read_text().splitlines()

    assert len(latencies) >= 30 and max(latencies) < 2.0, sorted(latencies)[-5:]
    assert len(flood) >= 10 and all(a.startswith(b"HTTP/1.1 400") for a in flood), set(flood)
    assert sent and max(sent) < 32 * 1024 * 1024  # refused long before 400 MB were taken in
    assert closed == SLOW_CONNECTIONS
    assert timedelta(0) <= late < timedelta(seconds=1), late
    assert peak_mib < 400, peak_mib
    assert all(g == b"" or g.startswith(b"HTTP/1.1 4") for g in garbage)
    for line in lines:  # uvicorn's own lines too: JSON, masked, no multi-line tracebacks
        entry = json.loads(line)
        assert not re.search(r"\+[1-9]\d{7,14}", json.dumps(entry)), line
    print(f"\nHTTP attack for {ATTACK_S:.0f} s: {len(flood)} many-field requests refused, {len(sent)} huge bodies cut off "
          f"after at most {max(sent) / 1024 / 1024:.1f} MiB sent, {closed}/{SLOW_CONNECTIONS} slow connections closed at 30 s; "
          f"/healthz max {max(latencies) * 1000:.0f} ms over {len(latencies)} probes; window fired {late.total_seconds() * 1000:.0f} ms "
          f"after its deadline; daemon peak RSS {peak_mib:.0f} MiB")
