"""Bounds on what one HTTP client may cost (SPEC §5), applied before any handler parses anything.

- A body over MAX_BODY_BYTES gets 413: at once when Content-Length says so, else as soon as the
  bytes read pass the limit (a chunked body is never buffered beyond it).
- Every request must arrive whole within REQUEST_SECONDS of its first byte (or of the connection
  opening): a client that trickles its headers or body is cut off (slowloris). Idle keep-alive
  connections are closed after KEEP_ALIVE_SECONDS by uvicorn itself.
- At most MAX_CONNECTIONS connections at once; beyond it uvicorn answers 503.

uvicorn has no request deadline of its own (only the keep-alive timer), so the one for requests
is added to its h11 protocol here; it is a timer per connection, armed while a request is being
received and disarmed once the request is complete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_BODY_BYTES = 64 * 1024
MAX_FORM_FIELDS = 200
REQUEST_SECONDS = 30.0
KEEP_ALIVE_SECONDS = 5
MAX_CONNECTIONS = 1000
MAX_HEADER_BYTES = 16 * 1024

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]


class BodyLimit:
    """ASGI middleware: the whole body is read here, within the limit, and handed to the app as one
    message. A client that goes away mid-body is dropped quietly (nothing to answer)."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES, on_refused: Callable[[str], None] = lambda reason: None):
        self.app = app
        self.limit = limit
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send, 413, f"request body over {self.limit} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send, 413, f"request body over {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only a disconnect can come

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, status: int, reason: str) -> None:
        self.on_refused("too_large" if status == 413 else str(status))
        text = f"{reason}\n".encode()
        await send({
            "type": "http.response.start", "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": text})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 refuses a malformed Content-Length before we get here
    return None


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on receiving each request."""

    deadline_s = REQUEST_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:  # the next request begins
            self._arm()
        super().data_received(data)
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):  # received whole (or closing)
            self._disarm()

    def on_response_complete(self) -> None:
        # A request pipelined behind the one just answered is read here, not in data_received: it
        # gets its deadline too (else headers whole and a body that never comes would hold the
        # connection forever: uvicorn cancels its keep-alive timer once a request starts).
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.SEND_BODY:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.deadline_s, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()
