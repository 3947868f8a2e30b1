"""A TCP proxy in front of the real PostgreSQL that can lose a connection right after a COMMIT:
the server receives the COMMIT and commits, the client never hears back (an "uncertain commit").

Armed, it watches each client connection's messages: after one that updates `incidents`, the next
`COMMIT` (psycopg sends it as a simple query) is passed to the server, the server's answer is
held back, and both sides are closed a moment later.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.harness import free_port


class CommitDroppingProxy:
    def __init__(self, upstream_port: int = 5432):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.armed = False
        self.dropped = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> CommitDroppingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def url(self, database_url: str) -> str:
        return database_url.replace("127.0.0.1:5432", f"127.0.0.1:{self.port}")

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        state = {"updated": False, "drop": False}

        async def upstream() -> None:  # client → server
            while data := await client_r.read(65536):
                if self.armed and b"UPDATE incidents" in data:
                    state["updated"] = True
                if self.armed and state["updated"] and b"COMMIT" in data:
                    self.armed, state["drop"] = False, True
                    self.dropped += 1
                    server_w.write(data)
                    await server_w.drain()
                    await asyncio.sleep(0.3)  # the server commits and answers; the answer is dropped
                    server_w.close()
                    client_w.close()
                    return
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:  # server → client
            while data := await server_r.read(65536):
                if state["drop"]:
                    return
                client_w.write(data)
                await client_w.drain()

        with contextlib.suppress(Exception):
            await asyncio.gather(upstream(), downstream())
        for writer in (client_w, server_w):
            with contextlib.suppress(Exception):
                writer.close()
