"""Push through Firebase Cloud Messaging with the real `firebase-admin` client (SPEC §5).

A high-priority message per device: data carry the incident id, the summary, a signed expiring
acknowledgement token and the URLs to post it to; Android priority high with a time-to-live of the
leg's window; APNs time-sensitive (critical when configured). Tokens FCM reports UNREGISTERED are
handed back so the engine retires them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import firebase_admin
from firebase_admin import credentials, exceptions, messaging
from google.auth import exceptions as google_exceptions
from google.auth.transport import requests as google_requests

from escalator import resilience
from escalator.channels import Delivery, Outcome, Page, describe
from escalator.ladders import Contact
from escalator.provider_queue import NOTICE, Abandoned, ProviderQueue
from escalator.resilience import BreakerOpen, CircuitBreaker, ProviderError

log = logging.getLogger("escalator.channels.fcm")

DEFAULT_FCM_URL = "https://fcm.googleapis.com"
IN_FLIGHT = 32  # requests to FCM at once; the rest wait in the queue (escalator.provider_queue)
REQUEST_TIMEOUT_S = 10.0
NOTICE_WITHIN_S = 30.0
REFRESH_AHEAD = timedelta(minutes=5)


def make_app(credentials_path: str, fcm_api_url: str, name: str) -> firebase_admin.App:
    """A firebase-admin app; the service account's `token_uri` decides where access tokens come from."""
    app = firebase_admin.initialize_app(credentials.Certificate(credentials_path), name=name)
    if fcm_api_url.rstrip("/") != DEFAULT_FCM_URL:
        # firebase-admin has no endpoint setting: the URL is fixed when the messaging service is built
        # (private `_fcm_url`, from the class constant FCM_URL). This is the one place that changes
        # it, for this app only; firebase-admin is pinned exactly and tests/test_push.py covers it.
        service = messaging._get_messaging_service(app)
        service._fcm_url = f"{fcm_api_url.rstrip('/')}/v1/projects/{app.project_id}/messages:send"
    return app


def _error(status: int, text: str, retry_after: str | None) -> ProviderError:
    """An FCM v1 error answer, classified as firebase-admin classifies it: UNREGISTERED (a token
    FCM no longer knows) from the FcmError details; 429 and 5xx transient; other 4xx permanent."""
    try:
        details = json.loads(text).get("error", {}).get("details", [])
    except (ValueError, AttributeError):
        details = []
    codes = {d.get("errorCode") for d in details if isinstance(d, dict) and str(d.get("@type", "")).endswith("FcmError")}
    if "UNREGISTERED" in codes:
        return ProviderError("UNREGISTERED", transient=False, status=status)
    return ProviderError.from_status(status, "from FCM", retry_after)


def _classify(error: Exception) -> ProviderError:
    response = getattr(error, "http_response", None)
    status = getattr(response, "status_code", None)
    if isinstance(error, messaging.UnregisteredError):
        return ProviderError("UNREGISTERED", transient=False, status=status)
    if status is not None:
        retry_after = response.headers.get("Retry-After") if response is not None else None
        return ProviderError.from_status(status, type(error).__name__, retry_after)
    transient = isinstance(error, (exceptions.UnavailableError, exceptions.InternalError, exceptions.UnknownError, exceptions.DeadlineExceededError))
    return ProviderError(f"{'transient' if transient else 'rejected'}: {type(error).__name__}", transient=transient)


class FcmChannel:
    name = "push"

    def __init__(
        self, app: firebase_admin.App, public_url: str, issue_token: Callable[[str, str, int, int], str], breaker: CircuitBreaker,
        critical: bool = False, clock: resilience.Clock = time.monotonic, queue: ProviderQueue | None = None,
    ):
        self.app = app
        self.public_url = public_url
        self.issue_token = issue_token
        self.breaker = breaker
        self.critical = critical
        self.clock = clock
        self.queue = queue or ProviderQueue("fcm", IN_FLIGHT, clock)
        self._session: aiohttp.ClientSession | None = None

    def _message(self, page: Page, token: str, ack_token: str) -> messaging.Message:
        base = f"{self.public_url}/api/v1/incidents/{page.incident_id}"
        title = "Still on it?" if page.reminder else "Urgent incident"  # an expiring acknowledgement's reminder (SPEC §11)
        extra = {"caller": page.caller} if page.caller else {}
        if page.reminder:
            extra["reminder"] = "true"
        aps = messaging.Aps(
            alert=messaging.ApsAlert(title=title, body=page.summary), sound="default",
            custom_data={"interruption-level": "critical" if self.critical else "time-sensitive"},
        )
        with warnings.catch_warnings():  # `token` is deprecated for `fid` in 7.x; contacts hold registration tokens
            warnings.simplefilter("ignore", DeprecationWarning)
            return messaging.Message(
                token=token,
                data={
                    "incident_id": page.incident_id, "summary": page.summary, "ack_token": ack_token, "test": str(page.test).lower(),
                    "ack_url": f"{base}/ack", "pass_url": f"{base}/pass", "leg": page.leg, **extra,
                },
                notification=messaging.Notification(title=title, body=page.summary),
                android=messaging.AndroidConfig(priority="high", ttl=timedelta(seconds=max(1, int(page.window_s)))),  # what is left of the window
                apns=messaging.APNSConfig(headers={"apns-priority": "10"}, payload=messaging.APNSPayload(aps=aps)),
            )

    async def send(self, page: Page) -> Outcome:
        tokens = list(page.contact.push_tokens)
        if not tokens:
            return Outcome(False, reason="contact has no push tokens")
        ack_token = self.issue_token(page.incident_id, page.contact.id, page.cycle, page.leg_index)
        dead: list[str] = []
        remaining = list(tokens)

        async def attempt() -> str:
            await self._fresh_credential()
            answers = await asyncio.gather(*(self._post(self._message(page, t, ack_token)) for t in remaining))
            sent, errors = [], []
            for token, answer in zip(list(remaining), answers):
                if isinstance(answer, str):
                    sent.append(answer)
                    remaining.remove(token)
                else:
                    if answer.reason == "UNREGISTERED":
                        dead.append(token)
                        remaining.remove(token)
                    elif not answer.transient:
                        remaining.remove(token)
                    errors.append(answer)
            if sent:
                return ",".join(sent)
            transient = [e for e in errors if e.transient]
            raise transient[0] if transient else errors[0]

        try:
            ref = await resilience.call(attempt, self.breaker, self.clock() + page.window_s, clock=self.clock, queue=self.queue)
        except (BreakerOpen, ProviderError, Abandoned) as exc:
            log.warning("%s page failed: %s", describe(page), exc.reason)
            return Outcome(False, reason=exc.reason, dead_tokens=tuple(dead))
        return Outcome(True, ref=ref, dead_tokens=tuple(dead))

    async def _post(self, message: messaging.Message) -> str | ProviderError:
        """One message to FCM v1: its message id, or the error as a ProviderError.

        firebase-admin builds and validates the message (its own encoder), names the endpoint and
        holds the credential; only the HTTP request is ours, on the aiohttp session the daemon uses
        for Twilio too. firebase-admin's async path goes through httpx, httpcore and anyio and a
        retry transport of its own: a third of the event loop's time at 100 incidents/s (py-spy, see
        README "Benchmarks"), for a request this makes in a tenth of it. Our retries and breaker are
        escalator.resilience's, as for every provider. What FCM answers is read as firebase-admin
        reads it (an `FcmError` errorCode in the error's details): tests/test_push.py checks that
        the request is the one firebase-admin would send.
        """
        service = messaging._get_messaging_service(self.app)
        body = json.dumps({"message": messaging._MessagingService.encode_message(message)})
        credential = self.app.credential.get_credential()
        headers = {**service._fcm_headers, "Authorization": f"Bearer {credential.token}", "Content-Type": "application/json"}
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        try:
            async with self._session.post(service._fcm_url, data=body, headers=headers) as response:
                text = await response.text()
                if response.status == 200:
                    return str(json.loads(text).get("name", ""))
                return _error(response.status, text, response.headers.get("Retry-After"))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            return ProviderError(f"transient: {type(exc).__name__} talking to FCM", transient=True)

    async def _fresh_credential(self) -> None:
        """Refresh the OAuth token in a worker thread, ahead of time.

        firebase-admin's async client refreshes an expired token with google-auth's *synchronous*
        transport inside the event loop, which would stall every window while the token endpoint
        answers. Keeping the token fresh here means that in-loop refresh never runs.
        """
        credential = self.app.credential.get_credential()
        now = datetime.now(UTC).replace(tzinfo=None)  # google-auth keeps naive UTC expiries
        if credential.valid and credential.expiry and credential.expiry - now > REFRESH_AHEAD:
            return
        try:
            await asyncio.to_thread(credential.refresh, google_requests.Request())
        except (google_exceptions.TransportError, google_exceptions.RefreshError) as exc:
            raise ProviderError(f"transient: cannot get an FCM access token ({type(exc).__name__})", transient=True) from None

    async def delivery_status(self, ref: str) -> Delivery:
        # FCM confirms acceptance; delivery to the device is not reported back.
        return Delivery("accepted", final=True, ok=True)

    async def cancel(self, ref: str) -> None:
        return None  # a push message cannot be taken back

    async def notify(self, contact: Contact, incident_id: str, text: str, title: str = "Incident taken") -> bool:
        if not contact.push_tokens or self.breaker.state == resilience.OPEN:
            return False
        try:
            await self._fresh_credential()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                notices = [
                    messaging.Message(token=t, data={"notice": text, **({"incident_id": incident_id} if incident_id else {})},
                                      notification=messaging.Notification(title=title, body=text))
                    for t in contact.push_tokens
                ]
            async with self.queue.slot(NOTICE, self.clock() + NOTICE_WITHIN_S):
                answers = await asyncio.gather(*(self._post(n) for n in notices))
        except Exception as exc:  # best effort
            log.warning("push notice to %s failed: %s", contact.id, type(exc).__name__)
            return False
        return any(isinstance(a, str) for a in answers)  # some device has it

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        # delete_app() closes the async client with asyncio.run(), impossible inside a running loop:
        # close it here first, then let delete_app run (now a no-op close) in a worker thread.
        service = messaging._get_messaging_service(self.app)
        await service._async_client.aclose()
        await asyncio.to_thread(firebase_admin.delete_app, self.app)
