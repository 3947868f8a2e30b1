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
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from escalator import twiml
from escalator.messages import ID_RE

Readiness = Callable[[], Awaitable[dict[str, Any]]]
XML = "application/xml"


class TwilioHooks(Protocol):
    async def sms(self, phone: str, body: str) -> str | None: ...

    async def voice(self, incident_id: str, key: str, answered_by: str | None, attempt: int) -> str: ...

    async def gather(self, incident_id: str, key: str, digits: str, attempt: int) -> str: ...

    async def status(self, incident_id: str, key: str, channel: str, status: str, error_code: str | None) -> None: ...

    async def push(self, incident_id: str, bearer: str | None, action: str) -> tuple[int, dict[str, Any]]: ...


def api_routes(hooks: TwilioHooks | None) -> list[Route]:
    """The app's acknowledgement API: the push message's signed token as a bearer token."""

    def endpoint(action: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            if hooks is None:
                return JSONResponse({"error": "not available"}, status_code=404)
            header = request.headers.get("Authorization", "")
            bearer = header[7:].strip() if header.lower().startswith("bearer ") else None
            incident_id = request.path_params["incident_id"]
            if not ID_RE.fullmatch(incident_id):  # no such incident can exist (SPEC §3 incident ids)
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


def twilio_routes(hooks: TwilioHooks | None, auth_token: str | None, public_url: str) -> list[Route]:
    """Every Twilio callback must carry a valid X-Twilio-Signature for the URL Twilio was given:
    ESCALATOR_PUBLIC_URL + path + query, never rebuilt from the Host header. Anything else: 403."""
    validator = RequestValidator(auth_token) if auth_token else None

    async def signed(request: Request) -> dict[str, str] | None:
        body = (await request.body()).decode("utf-8", "replace")
        # A multi-dict: a repeated parameter is signed with all its values (the validator uses getlist).
        form = ImmutableMultiDict(parse_qsl(body, keep_blank_values=True))
        url = public_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        signature = request.headers.get("X-Twilio-Signature", "")
        if validator is None or hooks is None or not signature or not validator.validate(url, form, signature):
            return None
        return dict(form)

    def route(path: str, handle: Callable[[dict[str, str], dict[str, str]], Awaitable[Response]]) -> Route:
        """A Twilio route: the signature is checked first; only then does `handle(form, query)` run."""

        async def endpoint(request: Request) -> Response:
            form = await signed(request)
            if form is None:
                return PlainTextResponse("invalid or missing X-Twilio-Signature\n", status_code=403)
            query = dict(request.query_params)
            if _has_nul(form) or _has_nul(query):  # never from Twilio, and PostgreSQL cannot store it
                return PlainTextResponse("NUL characters are not accepted\n", status_code=400)
            return await handle(form, query)

        return Route(path, endpoint, methods=["POST"])

    async def sms(form: dict[str, str], q: dict[str, str]) -> Response:
        text = await hooks.sms(form.get("From", ""), form.get("Body", ""))  # type: ignore[union-attr]
        return Response(twiml.sms_reply(text), media_type=XML)

    async def voice(form: dict[str, str], q: dict[str, str]) -> Response:
        body = await hooks.voice(q.get("incident", ""), q.get("key", ""), form.get("AnsweredBy"), _attempt(q))  # type: ignore[union-attr]
        return Response(body, media_type=XML)

    async def gather(form: dict[str, str], q: dict[str, str]) -> Response:
        body = await hooks.gather(q.get("incident", ""), q.get("key", ""), form.get("Digits", ""), _attempt(q))  # type: ignore[union-attr]
        return Response(body, media_type=XML)

    async def test_call(form: dict[str, str], q: dict[str, str]) -> Response:
        return Response(twiml.test_call(), media_type=XML)

    async def status(form: dict[str, str], q: dict[str, str]) -> Response:
        state = form.get("CallStatus") or form.get("MessageStatus") or ""
        await hooks.status(q.get("incident", ""), q.get("key", ""), q.get("channel", ""), state, form.get("ErrorCode"))  # type: ignore[union-attr]
        return Response(status_code=204)

    return [
        route("/twilio/sms", sms),
        route("/twilio/voice", voice),
        route("/twilio/gather", gather),
        route("/twilio/status", status),
        route("/twilio/test-call", test_call),
    ]


def create_app(
    readiness: Readiness,
    registry: CollectorRegistry,
    twilio: TwilioHooks | None = None,
    twilio_auth_token: str | None = None,
    public_url: str = "",
) -> Starlette:
    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        body = await readiness()
        # Only the database decides readiness: paging and acknowledgements go on without NATS.
        return JSONResponse(body, status_code=200 if body.get("database", {}).get("ok") else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            *twilio_routes(twilio, twilio_auth_token, public_url),
            *api_routes(twilio),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn inside our loop: the daemon owns SIGTERM/SIGINT, so uvicorn must not capture them."""

    def capture_signals(self):  # type: ignore[override]
        import contextlib

        return contextlib.nullcontext()


class HttpServer:
    def __init__(self, app: Starlette, host: str, port: int):
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
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
