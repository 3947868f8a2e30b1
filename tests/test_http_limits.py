"""What one HTTP client may cost (SPEC §5), against the real uvicorn server on a real socket: bodies
over 64 KiB get 413 and more than 200 fields 400 before anything is parsed, the signature check is
linear, slow clients are cut off, and a trailing slash is never redirected to the client's Host."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from escalator.metrics import Metrics
from escalator.web import HttpServer, create_app
from tests.harness import free_port

TOKEN = "test-auth-token"


class Hooks:
    def __init__(self) -> None:
        self.texts: list[tuple[str, str, str]] = []

    async def sms(self, phone: str, body: str, sid: str, to: str = "") -> str | None:
        self.texts.append((phone, body, sid))
        return f"got {body}"


async def _ready() -> dict:
    return {"database": {"ok": True}}


@contextlib.asynccontextmanager
async def server(request_seconds: float = 30.0) -> AsyncIterator[tuple[str, Hooks, Metrics]]:
    port, hooks, metrics = free_port(), Hooks(), Metrics()
    public = f"http://127.0.0.1:{port}"
    app = create_app(_ready, metrics.registry, hooks, TOKEN, public, on_refused=lambda r: metrics.http_refused.labels(r).inc())
    http = HttpServer(app, "127.0.0.1", port, request_seconds=request_seconds)
    await http.start()
    try:
        yield public, hooks, metrics
    finally:
        await http.stop()


async def raw(port: int, data: bytes, read_timeout: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server answers before it closes (or the timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), read_timeout):
            out += chunk
            if b"\r\n\r\n" in out and b"connection: close" not in out.lower() and len(out) > 12:
                break
    except TimeoutError:
        pass
    writer.close()
    return out


def port_of(public: str) -> int:
    return int(public.rsplit(":", 1)[1])


def form_post(path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode() + body


def test_a_body_over_64_kib_is_refused_with_413_before_it_is_read() -> None:
    async def scenario():
        async with server() as (public, hooks, metrics):
            port = port_of(public)
            declared = await raw(port, form_post("/twilio/sms", b"x" * (64 * 1024 + 1)))
            # a header promising 400 MB: answered at once, the body is never waited for
            started = time.monotonic()
            promised = await raw(port, b"POST /twilio/sms HTTP/1.1\r\nHost: x\r\nContent-Length: 400000000\r\n\r\n" + b"a" * 1000)
            promised_s = time.monotonic() - started
            chunk = b"%x\r\n%s\r\n" % (32 * 1024, b"b" * 32 * 1024)
            chunked = await raw(port, b"POST /twilio/sms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3)
            api = await raw(port, b"POST /api/v1/incidents/x/ack HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n")
            return declared, promised, promised_s, chunked, api, metrics.registry.get_sample_value(
                "escalator_http_refused_total", {"reason": "too_large"}
            ), hooks.texts

    declared, promised, promised_s, chunked, api, refused, texts = asyncio.run(scenario())
    for answer in (declared, promised, chunked, api):
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert promised_s < 5
    assert refused == 4 and texts == []


def test_more_than_200_fields_is_400_before_the_signature_is_checked_and_the_check_is_linear() -> None:
    async def scenario():
        async with server() as (public, hooks, metrics):
            port = port_of(public)
            started = time.monotonic()
            many = await raw(port, form_post("/twilio/sms", b"&".join([b"f=1"] * 16000)))  # 64 KB of fields
            many_s = time.monotonic() - started
            query = await raw(port, form_post("/twilio/sms?" + "&".join(f"q{i}=1" for i in range(201)), b"Body=x"))
            # 200 fields, validly signed: accepted, and the check is one pass over them
            fields = {f"f{i:03d}": "v" for i in range(197)} | {"MessageSid": "SM1", "From": "+14155550101", "Body": "ACK 1234"}
            signature = RequestValidator(TOKEN).compute_signature(public + "/twilio/sms", fields)
            started = time.monotonic()
            signed = await raw(port, form_post("/twilio/sms", urlencode(fields).encode(), f"X-Twilio-Signature: {signature}\r\n"))
            signed_s = time.monotonic() - started
            unsigned = await raw(port, form_post("/twilio/sms", urlencode(fields).encode()))
            return many, many_s, query, signed, signed_s, unsigned, hooks.texts

    many, many_s, query, signed, signed_s, unsigned, texts = asyncio.run(scenario())
    assert many.startswith(b"HTTP/1.1 400") and b"more than 200 form fields" in many and many_s < 1.0
    assert query.startswith(b"HTTP/1.1 400")
    assert signed.startswith(b"HTTP/1.1 200") and b"got ACK 1234" in signed and signed_s < 1.0
    assert unsigned.startswith(b"HTTP/1.1 403")
    assert texts == [("+14155550101", "ACK 1234", "SM1")]


def test_a_signed_text_without_its_message_sid_is_refused() -> None:
    async def scenario():
        async with server() as (public, hooks, metrics):
            fields = {"From": "+14155550101", "Body": "ACK"}
            signature = RequestValidator(TOKEN).compute_signature(public + "/twilio/sms", fields)
            return await raw(port_of(public), form_post("/twilio/sms", urlencode(fields).encode(), f"X-Twilio-Signature: {signature}\r\n")), hooks.texts

    answer, texts = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 400") and b"MessageSid" in answer and texts == []


def test_slow_and_idle_connections_are_closed() -> None:
    async def scenario():
        async with server(request_seconds=1.0) as (public, hooks, metrics):
            port = port_of(public)
            slow = []
            for _ in range(50):  # headers trickled a byte at a time never finish
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"POST /twilio/sms HTTP/1.1\r\nHost: x\r\n")
                slow.append((reader, writer))
            body_stall = await asyncio.open_connection("127.0.0.1", port)  # headers whole, the body never comes
            body_stall[1].write(b"POST /twilio/sms HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
            pipelined = await asyncio.open_connection("127.0.0.1", port)  # the same, behind a request answered first
            pipelined[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nPOST /twilio/sms HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            first = await asyncio.wait_for(pipelined[0].readuntil(b"ok\n"), 5)
            assert first.startswith(b"HTTP/1.1 200")
            started = time.monotonic()

            async def closed_by_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
                try:
                    writer.write(b"X")
                    data = await asyncio.wait_for(reader.read(100), 5)
                    return data == b"" or data.startswith(b"HTTP/1.1")
                except ConnectionError:  # reset: closed by the server too
                    return True
                except TimeoutError:
                    return False
                finally:
                    writer.close()

            closed = sum(await asyncio.gather(*(closed_by_server(r, w) for r, w in [*slow, body_stall, pipelined])))
            elapsed = time.monotonic() - started
            # meanwhile and afterwards a normal request is served at once
            health = await raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return closed, elapsed, health

    closed, elapsed, health = asyncio.run(scenario())
    assert closed == 52 and elapsed < 5
    assert health.startswith(b"HTTP/1.1 200")


def test_a_trailing_slash_is_not_redirected_to_the_clients_host() -> None:
    async def scenario():
        async with server() as (public, hooks, metrics):
            return await raw(port_of(public), b"GET /healthz/ HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")

    answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 404") and b"evil.example" not in answer
