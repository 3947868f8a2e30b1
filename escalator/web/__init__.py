"""The HTTP server: health, readiness, metrics and the Twilio webhooks (the push API plugs in here).

Served by uvicorn inside the daemon's own event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import parse_qsl

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from escalator import twiml
from escalator.web.limits import (
    KEEP_ALIVE_SECONDS, MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_FORM_FIELDS, MAX_HEADER_BYTES, REQUEST_SECONDS, BodyLimit,
    DeadlineH11Protocol,
)
from escalator.messages import INCIDENT_ID_RE

Readiness = Callable[[], Awaitable[dict[str, Any]]]
XML = "application/xml"


class Webhooks(Protocol):
    async def sms(self, phone: str, body: str, sid: str, to: str = "") -> str | None: ...

    async def voice(self, incident_id: str, key: str, answered_by: str | None, attempt: int) -> str: ...

    async def gather(self, incident_id: str, key: str, digits: str, attempt: int, call_sid: str) -> str: ...

    async def connect(self, incident_id: str, key: str, digits: str, attempt: int, call_sid: str) -> str: ...

    async def status(self, incident_id: str, key: str, channel: str, status: str, error_code: str | None) -> None: ...

    async def push(self, incident_id: str, bearer: str | None, action: str) -> tuple[int, dict[str, Any]]: ...


def api_routes(hooks: Webhooks | None) -> list[Route]:
    """The app's acknowledgement API: the push message's signed token as a bearer token."""

    def endpoint(action: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            if hooks is None:
                return JSONResponse({"error": "not available"}, status_code=404)
            header = request.headers.get("Authorization", "")
            bearer = header[7:].strip() if header.lower().startswith("bearer ") else None
            incident_id = request.path_params["incident_id"]
            if not INCIDENT_ID_RE.fullmatch(incident_id):  # no such incident can exist (SPEC §3 incident ids)
                return JSONResponse({"error": "no such incident"}, status_code=404)
            status, body = await hooks.push(incident_id, bearer, action)
            return JSONResponse(body, status_code=status)

        return handle

    return [
        Route("/api/v1/incidents/{incident_id}/ack", endpoint("ack"), methods=["POST"]),
        Route("/api/v1/incidents/{incident_id}/pass", endpoint("pass"), methods=["POST"]),
    ]


def _has_nul(values: dict[str, str]) -> bool:
    return any("\x00" in k or "\x00" in v for k, v in values.items())


def _attempt(query: dict[str, str]) -> int:
    try:
        return max(1, min(int(query.get("attempt", "1")), 10))
    except ValueError:
        return 1


class Params:
    """Form fields as the signature check reads them: each name once, each with all its values (a
    repeated parameter is signed with all of them). Starlette's multi-dict scans every field for each
    name asked for, which made the check quadratic in the number of fields; this is one pass."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name, []).append(value)

    def __iter__(self) -> Any:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def getall(self, name: str) -> list[str]:  # what twilio's RequestValidator asks a multi-dict for
        return self._values[name]


def _fields(encoded: str) -> int:
    return encoded.count("&") + 1 if encoded else 0  # as parse_qsl counts them


def twilio_routes(
    hooks: Webhooks | None, auth_token: str | None, public_url: str, on_refused: Callable[[str], None] = lambda reason: None
) -> list[Route]:
    """Every Twilio callback must carry a valid X-Twilio-Signature for the URL Twilio was given:
    ESCALATOR_PUBLIC_URL + path + query, never rebuilt from the Host header. Anything else: 403."""
    validator = RequestValidator(auth_token) if auth_token else None

    async def endpoint_of(handle: Callable[[dict[str, str], dict[str, str]], Awaitable[Response]], request: Request) -> Response:
        # The body is already read, within its limit (escalator.web.limits). Fields are counted
        # before they are parsed, and the parse itself is bounded too.
        body = (await request.body()).decode("utf-8", "replace")
        query_string = request.url.query
        if _fields(body) > MAX_FORM_FIELDS or _fields(query_string) > MAX_FORM_FIELDS:
            on_refused("too_many_fields")
            return PlainTextResponse(f"more than {MAX_FORM_FIELDS} form fields\n", status_code=400)
        pairs = parse_qsl(body, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        form = Params(pairs)
        url = public_url + request.url.path + (f"?{query_string}" if query_string else "")
        signature = request.headers.get("X-Twilio-Signature", "")
        if validator is None or hooks is None or not signature or not validator.validate(url, form, signature):
            return PlainTextResponse("invalid or missing X-Twilio-Signature\n", status_code=403)
        values = dict(pairs)
        query = dict(parse_qsl(query_string, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS))
        if _has_nul(values) or _has_nul(query):  # never from Twilio, and PostgreSQL cannot store it
            return PlainTextResponse("NUL characters are not accepted\n", status_code=400)
        return await handle(values, query)

    def route(path: str, handle: Callable[[dict[str, str], dict[str, str]], Awaitable[Response]]) -> Route:
        """A Twilio route: the signature is checked first; only then does `handle(form, query)` run."""

        async def endpoint(request: Request) -> Response:
            return await endpoint_of(handle, request)

        return Route(path, endpoint, methods=["POST"])

    async def sms(form: dict[str, str], q: dict[str, str]) -> Response:
        if not form.get("MessageSid"):  # Twilio always sends it: it is what makes a replay harmless
            return PlainTextResponse("MessageSid is missing\n", status_code=400)
        text = await hooks.sms(form.get("From", ""), form.get("Body", ""), form["MessageSid"], form.get("To", ""))  # type: ignore[union-attr]
        return Response(twiml.sms_reply(text), media_type=XML)

    async def voice(form: dict[str, str], q: dict[str, str]) -> Response:
        body = await hooks.voice(q.get("incident", ""), q.get("key", ""), form.get("AnsweredBy"), _attempt(q))  # type: ignore[union-attr]
        return Response(body, media_type=XML)

    def key_press(act: Callable[[str, str, str, int, str], Awaitable[str]]) -> Callable[[dict[str, str], dict[str, str]], Awaitable[Response]]:
        """A `<Gather>`'s action (a key pressed on a call): `act(incident, key, digits, attempt, call sid)`."""

        async def handle(form: dict[str, str], q: dict[str, str]) -> Response:
            if not form.get("CallSid"):  # what makes a replayed key press harmless (once per call)
                return PlainTextResponse("CallSid is missing\n", status_code=400)
            body = await act(q.get("incident", ""), q.get("key", ""), form.get("Digits", ""), _attempt(q), form["CallSid"])
            return Response(body, media_type=XML)

        return handle

    async def test_call(form: dict[str, str], q: dict[str, str]) -> Response:
        return Response(twiml.test_call(), media_type=XML)

    async def status(form: dict[str, str], q: dict[str, str]) -> Response:
        state = form.get("CallStatus") or form.get("MessageStatus") or ""
        await hooks.status(q.get("incident", ""), q.get("key", ""), q.get("channel", ""), state, form.get("ErrorCode"))  # type: ignore[union-attr]
        return Response(status_code=204)

    return [
        route("/twilio/sms", sms),
        route("/twilio/voice", voice),
        route("/twilio/gather", key_press(lambda *a: hooks.gather(*a))),  # type: ignore[union-attr]
        route("/twilio/connect", key_press(lambda *a: hooks.connect(*a))),  # type: ignore[union-attr]
        route("/twilio/status", status),
        route("/twilio/test-call", test_call),
    ]


def create_app(
    readiness: Readiness,
    registry: CollectorRegistry,
    twilio: Webhooks | None = None,
    twilio_auth_token: str | None = None,
    public_url: str = "",
    on_refused: Callable[[str], None] = lambda reason: None,
) -> Any:
    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        body = await readiness()
        # Only the database decides readiness: paging and acknowledgements go on without NATS.
        return JSONResponse(body, status_code=200 if body.get("database", {}).get("ok") else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            *twilio_routes(twilio, twilio_auth_token, public_url, on_refused),
            *api_routes(twilio),
        ]
    )
    # A path with or without its trailing slash is not redirected: Starlette's redirect would build
    # its Location from the request's Host header, which any client can set.
    app.router.redirect_slashes = False
    return BodyLimit(app, MAX_BODY_BYTES, on_refused)


class _Server(uvicorn.Server):
    """uvicorn inside our loop: the daemon owns SIGTERM/SIGINT, so uvicorn must not capture them."""

    def capture_signals(self):  # type: ignore[override]
        import contextlib

        return contextlib.nullcontext()


class HttpServer:
    def __init__(self, app: Any, host: str, port: int, request_seconds: float = REQUEST_SECONDS):
        protocol = type("Protocol", (DeadlineH11Protocol,), {"deadline_s": request_seconds})
        # log_config=None: uvicorn's own lines (errors, tracebacks) go through the daemon's handler,
        # with its format and its masking, instead of handlers of uvicorn's own.
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off", log_config=None,
            http=protocol, timeout_keep_alive=KEEP_ALIVE_SECONDS, limit_concurrency=MAX_CONNECTIONS,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES, server_header=False,
        )
        self.server = _Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises the bind error
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
