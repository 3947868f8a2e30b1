"""Voice calls and SMS through Twilio's REST API, with the real `twilio` client (SPEC §5).

Calls carry a `Url` (the TwiML prompt) and a `StatusCallback` under ESCALATOR_PUBLIC_URL and ask for
answering-machine detection; texts carry the summary, `Reply ACK <code> …` and a `StatusCallback`.
Every request goes through retries bounded by the leg's window and the channel's circuit breaker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlencode, urlsplit

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from escalator import replies, resilience
from escalator.channels import OPTED_OUT, TEST_TEXT, Delivery, Outcome, Page, describe
from escalator.ladders import Contact
from escalator.provider_queue import CANCEL, NOTICE, Abandoned, ProviderQueue
from escalator.resilience import BreakerOpen, CircuitBreaker, ProviderError

log = logging.getLogger("escalator.channels.twilio")

REQUEST_TIMEOUT_S = 10.0
IN_FLIGHT = 32  # requests to Twilio at once (voice and SMS together); the rest wait in the queue
MAX_VALIDITY_S = 36_000  # Twilio's largest ValidityPeriod (10 hours)
CANCEL_WITHIN_S = 10.0
NOTICE_WITHIN_S = 30.0
UNSUBSCRIBED_RECIPIENT = 21610  # Twilio: "Attempt to send to unsubscribed recipient" (the number texted STOP)


class OptedOut(ProviderError):
    """Twilio refused a text with error 21610: the number opted out. A permanent refusal like any
    4xx (not retried, not held against the provider), told apart so the number is marked."""

    def __init__(self) -> None:
        super().__init__(OPTED_OUT, transient=False)


class _HttpClient(AsyncTwilioHttpClient):
    """Sends every Twilio host to the configured base URL (a sandbox or test double), and classifies
    transient failures here, the only place that still sees the response headers (Retry-After)."""

    def __init__(self, base_url: str, timeout: float = REQUEST_TIMEOUT_S):
        super().__init__(pool_connections=False, timeout=timeout)
        self.base = urlsplit(base_url)
        self.request_timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _rewrite(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.hostname and (parts.hostname == "twilio.com" or parts.hostname.endswith(".twilio.com")):
            path = self.base.path.rstrip("/") + parts.path
            return parts._replace(scheme=self.base.scheme, netloc=self.base.netloc, path=path).geturl()
        return url

    async def request(self, method, url, params=None, data=None, headers=None, auth=None, timeout=None, allow_redirects=False):  # type: ignore[override]
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            if auth:
                headers = {**(headers or {}), "Authorization": aiohttp.encode_basic_auth(*auth)}
            async with self._session.request(
                method.upper(), self._rewrite(url), params=params, data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.request_timeout), allow_redirects=allow_redirects,
            ) as response:
                text = await response.text()
                if response.status == 429 or response.status >= 500:
                    raise ProviderError.from_status(response.status, "from Twilio", response.headers.get("Retry-After"))
                return Response(response.status, text, dict(response.headers))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise ProviderError(f"transient: {type(exc).__name__} talking to Twilio", transient=True) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# Twilio's words for where a call or a text stands (its status callbacks and REST resources), and
# what each means here. Only this adapter reads them.
_FAILED = {"voice": {"busy", "failed", "no-answer"}, "sms": {"undelivered", "failed"}}
_DONE = {"voice": {"completed"}, "sms": {"delivered", "read"}}
# `canceled`: stopped through the REST API while queued or ringing, which only escalator does (its
# leg ended, or the incident was taken): not the provider failing, and not a reach either.
_STOPPED = {"voice": {"canceled"}}
FAILED, FINISHED, STOPPED = "failed", "finished", "stopped"


def callback_outcome(channel: str, status: str) -> str | None:
    """A status callback's meaning: FAILED (the page did not reach the person: feeds the walk's
    "nobody reachable" rule), FINISHED (it did: noted in the timeline), STOPPED (we cancelled it:
    noted), or None (still under way)."""
    if status in _FAILED.get(channel, ()):
        return FAILED
    if status in _DONE.get(channel, ()):
        return FINISHED
    if status in _STOPPED.get(channel, ()):
        return STOPPED
    return None


def delivery(channel: str, status: str) -> Delivery:
    outcome = callback_outcome(channel, status)
    return Delivery(status, final=outcome is not None, ok=outcome == FINISHED or outcome is None)


def make_client(account_sid: str, auth_token: str, api_url: str) -> Client:
    return Client(account_sid, auth_token, http_client=_HttpClient(api_url))


def callback_url(public_url: str, path: str, **query: str) -> str:
    """A URL Twilio will call back: ESCALATOR_PUBLIC_URL + path + query (what signatures are checked against)."""
    return f"{public_url}{path}?{urlencode(query)}"


class TwilioChannel:
    """`voice` or `sms`, one breaker each; both share the account's request queue."""

    def __init__(
        self, name: str, client: Client, from_number: str, public_url: str, breaker: CircuitBreaker,
        clock: resilience.Clock = time.monotonic, queue: ProviderQueue | None = None,
    ):
        assert name in ("voice", "sms")
        self.name = name
        self.client = client
        self.from_number = from_number
        self.public_url = public_url
        self.breaker = breaker
        self.clock = clock
        self.queue = queue or ProviderQueue("twilio", IN_FLIGHT, clock)

    async def send(self, page: Page) -> Outcome:
        if not page.contact.phone:
            return Outcome(False, reason="contact has no phone")
        deadline = self.clock() + page.window_s
        try:
            ref = await resilience.call(lambda: self._create(page, deadline), self.breaker, deadline, clock=self.clock, queue=self.queue)
        except OptedOut:
            log.warning("%s page failed: %s", describe(page), OPTED_OUT)
            return Outcome(False, reason=OPTED_OUT, opted_out=True)
        except (BreakerOpen, ProviderError, Abandoned) as exc:
            log.warning("%s page failed: %s", describe(page), exc.reason)
            return Outcome(False, reason=exc.reason)
        log.info("%s page sent: %s", describe(page), ref)
        return Outcome(True, ref=ref)

    async def _create(self, page: Page, deadline: float) -> str:
        query = {"incident": page.incident_id, "key": page.key}
        status_url = callback_url(self.public_url, "/twilio/status", channel=self.name, **query)
        voice_path = "/twilio/test-call" if page.test else "/twilio/voice"
        try:
            if self.name == "sms":
                if page.test:
                    body = TEST_TEXT
                elif page.reminder:
                    body = replies.reminder_text(page.summary, page.code or "")
                else:
                    body = replies.page_text(page.summary, page.code or "")
                # Twilio queues texts beyond the number's rate (1 segment/s for a long code) and would
                # deliver a late one long after its leg; with a validity period it fails instead
                # (error 30036, a `failed` status callback), which feeds the "nobody reachable" rule.
                validity = max(1, min(MAX_VALIDITY_S, int(deadline - self.clock())))  # never past the window
                message = await self.client.messages.create_async(
                    to=page.contact.phone, from_=self.from_number, body=body, status_callback=status_url,
                    validity_period=validity,
                )
                return str(message.sid)
            call = await self.client.calls.create_async(
                to=page.contact.phone, from_=self.from_number, url=callback_url(self.public_url, voice_path, **query),
                method="POST", status_callback=status_url, status_callback_method="POST",
                status_callback_event=["ringing", "answered", "completed"],  # ringing / answered: shown by `escalator watch`
                machine_detection="Enable", timeout=30,
            )
            return str(call.sid)
        except TwilioRestException as exc:
            if exc.code == UNSUBSCRIBED_RECIPIENT:
                raise OptedOut from None
            raise ProviderError.from_status(exc.status, str(exc.msg)[:200]) from None

    async def cancel(self, ref: str) -> None:
        """Stop a call that is still queued or ringing (its leg is over, or the incident was taken).
        Twilio leaves a call already answered alone. Best effort: a failure is logged, not retried."""
        if self.name != "voice" or not ref.startswith("CA"):
            return
        try:
            async with self.queue.slot(CANCEL, self.clock() + CANCEL_WITHIN_S):
                await asyncio.wait_for(self.client.calls(ref).update_async(status="canceled"), CANCEL_WITHIN_S)
        except Exception as exc:
            log.info("cancelling call %s: %s", ref, getattr(exc, "reason", None) or type(exc).__name__)

    async def notify(self, contact: Contact, incident_id: str, text: str, title: str = "Incident taken") -> bool:
        # Notices only read the breaker: they neither take its half-open probe nor count against it.
        if self.name != "sms" or not contact.phone or self.breaker.state == resilience.OPEN:
            return False
        try:
            async with self.queue.slot(NOTICE, self.clock() + NOTICE_WITHIN_S):
                await self.client.messages.create_async(to=contact.phone, from_=self.from_number, body=text)
        except Exception as exc:  # a notice is best effort; it never blocks anything
            log.warning("notice to %s failed: %s", contact.id, type(exc).__name__)
            return False
        return True

    async def delivery_status(self, ref: str) -> Delivery:
        """Twilio's current status of a message or call (for `escalator contact test`)."""
        try:
            if self.name == "sms":
                status = str((await self.client.messages(ref).fetch_async()).status)
            else:
                status = str((await self.client.calls(ref).fetch_async()).status)
        except (TwilioRestException, ProviderError) as exc:
            return Delivery(f"unknown ({getattr(exc, 'msg', None) or getattr(exc, 'reason', exc)})", final=True, ok=False)
        return delivery(self.name, status)

    async def close(self) -> None:
        await self.client.http_client.close()
