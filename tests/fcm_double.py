"""A local stand-in for FCM v1 and Google's OAuth token endpoint, driven by the real firebase-admin."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness import free_port

ACCESS_TOKEN = "ya29.test-access-token"


class FcmDouble:
    def __init__(self, project: str = "escalator-test"):
        self.project = project
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.messages: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # time.time() when each of `messages` arrived
        self.headers: list[dict[str, str]] = []  # the request headers of each message received
        self.token_requests: list[dict[str, str]] = []
        self.unregistered: set[str] = set()  # device tokens FCM no longer knows
        self.status = 200  # e.g. 500 for an outage
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    def service_account(self, folder: Path) -> Path:
        """A service-account JSON with a real RSA key, whose token_uri points here."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        path = folder / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": self.project, "private_key_id": "test-key-1",
            "private_key": pem.decode(), "client_email": f"escalator@{self.project}.iam.gserviceaccount.com",
            "client_id": "1000", "token_uri": f"{self.url}/token",
        }))
        return path

    async def __aenter__(self) -> FcmDouble:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append(form)
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get("assertion"):
            return web.json_response({"error": "invalid_grant"}, status=400)
        return web.json_response({"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"})

    async def _send(self, request: web.Request) -> web.Response:
        arrived = time.time()
        if request.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
            return self._error(401, "UNAUTHENTICATED", None)
        if request.match_info["project"] != self.project:
            return self._error(404, "NOT_FOUND", None)
        body = await request.json()
        message = body["message"]
        self.headers.append(dict(request.headers))
        if self.status >= 500:
            return self._error(self.status, "INTERNAL", None)
        if message.get("token") in self.unregistered:
            return self._error(404, "NOT_FOUND", "UNREGISTERED")
        self.messages.append(message)
        self.arrivals.append(arrived)
        return web.json_response({"name": f"projects/{self.project}/messages/{next(self._ids)}"})

    @staticmethod
    def _error(status: int, state: str, fcm_code: str | None) -> web.Response:
        details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}] if fcm_code else []
        return web.json_response({"error": {"code": status, "message": "test double", "status": state, "details": details}}, status=status)
