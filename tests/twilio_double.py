"""A local stand-in for Twilio that behaves like it, driven by the real `twilio` client.

It takes `Calls.json` and `Messages.json` with basic auth; for a call it fetches the call's `Url`,
follows `<Gather>` actions by pressing the configured key and sends status callbacks; for a text it
sends the status callback. Every callback is signed with Twilio's real algorithm
(`RequestValidator.compute_signature`) over the exact URL it was given.

Twilio's own queues, when asked (`cps`, `mps`): calls beyond the account's calls per second wait
`queued` and are placed one by one; texts beyond the sender's messages per second wait too, and a
text that waited longer than its `ValidityPeriod` fails with error 30036 instead of being
delivered. `POST Calls/{sid}.json Status=canceled` stops a call still queued or ringing (and
leaves one in progress alone), as Twilio does. A `<Dial>` in the call's TwiML is recorded (who was
dialled, from which caller id). Opt-outs as Twilio's Advanced Opt-Out keeps them: a number that
texts STOP (`text_in`) is opted out before the text is forwarded to escalator, and a text to it is
refused with error 21610 until it texts START. `quiet`: no status callbacks and no call flow (the
benchmark's doubles only answer).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.harness import free_port


OPT_OUT = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}  # Twilio's default keywords
OPT_IN = {"START", "YES", "UNSTOP"}


@dataclass
class Call:
    sid: str
    to: str
    form: dict[str, str]
    said: list[str] = field(default_factory=list)  # everything escalator said on the call
    dialed: list[tuple[str | None, list[str]]] = field(default_factory=list)  # each <Dial>: (callerId, numbers)
    statuses: list[str] = field(default_factory=list)
    state: str = "queued"  # queued → ringing → in-progress → completed, or canceled / busy / …
    created: float = 0.0  # time.monotonic() when the request arrived
    received: float = 0.0  # time.time() of the same moment
    placed: float | None = None  # when it left Twilio's queue


@dataclass
class Message:
    sid: str
    to: str
    body: str
    form: dict[str, str]
    status: str = "queued"
    created: float = 0.0
    received: float = 0.0
    error_code: str | None = None


class TwilioDouble:
    def __init__(self, account_sid: str = "AC00000000000000000000000000000000", auth_token: str = "test-auth-token"):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls: list[Call] = []
        self.messages: list[Message] = []
        self.requests = 0
        # per destination number: how the person answers ("1", "2", "*1", "voicemail", "silent",
        # "busy", "no-answer"), how a text ends ("delivered", "undelivered"), how the API answers
        self.answer: dict[str, str] = {}
        self.text_status: dict[str, str] = {}
        self.api_status: int = 201  # e.g. 500 to fail everything, 400 to reject
        self.hang = False
        self.cps: float | None = None  # the account's calls per second (Twilio: 1 by default); None: no queue
        self.mps: float | None = None  # the sender's messages per second (a long code: 1); None: no queue
        self.ring_s = 0.0  # how long a placed call rings before it is answered
        self.quiet = False  # accept and answer only: no call flow, no status callbacks
        self.cancels: list[str] = []  # call sids asked to be canceled
        self.opted_out: set[str] = set()  # numbers that texted STOP (Twilio refuses texts to them: 21610)
        self._call_queue: asyncio.Queue[Any] | None = None  # Twilio's queues, made when first needed
        self._text_queue: asyncio.Queue[Any] | None = None
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> TwilioDouble:
        app = web.Application()
        base = f"/2010-04-01/Accounts/{self.account_sid}"
        app.router.add_post(base + "/Calls.json", self._create_call)
        app.router.add_post(base + "/Messages.json", self._create_message)
        app.router.add_get(base + "/Messages/{sid}.json", self._fetch)
        app.router.add_get(base + "/Calls/{sid}.json", self._fetch)
        app.router.add_post(base + "/Calls/{sid}.json", self._update_call)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.hang = False  # let hanging requests answer: aiohttp's cleanup would wait 60 s for them
        for task in list(self._tasks):
            task.cancel()
        if self.session:
            await self.session.close()
        if self._runner:
            await self._runner.cleanup()

    # -- signing, as Twilio does ---------------------------------------------------------------

    def sign(self, url: str, params: dict[str, str]) -> str:
        return RequestValidator(self.auth_token).compute_signature(url, params)

    async def post(self, url: str, params: dict[str, str], signature: str | None = "valid") -> tuple[int, str]:
        """POST a form to escalator as Twilio would (or with a bad / no signature). An inbound text
        gets its own MessageSid, as every message Twilio forwards has one."""
        if "/twilio/sms" in url and "MessageSid" not in params:
            params = {"MessageSid": f"SM{next(self._ids):032d}", "AccountSid": self.account_sid, **params}
        headers = {}
        if signature == "valid":
            headers["X-Twilio-Signature"] = self.sign(url, params)
        elif signature is not None:
            headers["X-Twilio-Signature"] = signature
        assert self.session is not None
        async with self.session.post(url, data=params, headers=headers) as response:
            return response.status, await response.text()

    # -- the REST API ----------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == expected

    async def _reply(self, request: web.Request, prefix: str) -> tuple[web.Response | None, dict[str, str], str]:
        self.requests += 1
        while self.hang:  # no answer until the outage ends (a client gives up long before, normally)
            await asyncio.sleep(0.05)
        if not self._authorised(request):
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401), {}, ""
        form = {k: v for k, v in (await request.post()).items()}
        if self.api_status >= 400:
            body = {"code": 21211 if self.api_status == 400 else 20500, "message": "test double says no", "status": self.api_status}
            return web.json_response(body, status=self.api_status), form, ""
        return None, form, f"{prefix}{next(self._ids):032d}"

    async def _fetch(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        for call in self.calls:
            if call.sid == sid:
                return web.json_response({"sid": sid, "status": call.statuses[-1] if call.statuses else "in-progress"})
        for message in self.messages:
            if message.sid == sid:
                return web.json_response({"sid": sid, "status": message.status})
        return web.json_response({"code": 20404, "message": "not found", "status": 404}, status=404)

    async def text_in(self, sms_url: str, from_: str, body: str) -> tuple[int, str]:
        """A person texts our number. Twilio acts on opt-out and opt-in keywords itself, then
        forwards the text to the webhook all the same."""
        word = " ".join(body.upper().split()).strip(" .!")
        if word in OPT_OUT:
            self.opted_out.add(from_)
        elif word in OPT_IN:
            self.opted_out.discard(from_)
        return await self.post(sms_url, {"From": from_, "To": "+14155550100", "Body": body})

    async def _create_message(self, request: web.Request) -> web.Response:
        error, form, sid = await self._reply(request, "SM")
        if error:
            return error
        if form.get("To") in self.opted_out:  # what Twilio answers for an unsubscribed recipient
            body = {"code": 21610, "message": "Attempt to send to unsubscribed recipient",
                    "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400}
            return web.json_response(body, status=400)
        message = Message(sid, form["To"], form["Body"], form, created=time.monotonic(), received=time.time())
        self.messages.append(message)
        if not self.quiet:
            status = self.text_status.get(form["To"], "delivered")
            self._spawn(self._deliver(message, status))
        return web.json_response({"sid": sid, "status": "queued", "to": form["To"], "body": form["Body"]}, status=201)

    async def _create_call(self, request: web.Request) -> web.Response:
        error, form, sid = await self._reply(request, "CA")
        if error:
            return error
        call = Call(sid, form["To"], form, created=time.monotonic(), received=time.time())
        self.calls.append(call)
        if not self.quiet:
            self._spawn(self._run_call(call))
        return web.json_response({"sid": sid, "status": "queued", "to": form["To"]}, status=201)

    async def _update_call(self, request: web.Request) -> web.Response:
        """`calls(sid).update(status="canceled")`: a call still queued or ringing stops; one in
        progress or over is left as it is (Twilio answers with the call as it stands)."""
        self.requests += 1
        if not self._authorised(request):
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401)
        form = {k: v for k, v in (await request.post()).items()}
        sid = request.match_info["sid"]
        call = next((c for c in self.calls if c.sid == sid), None)
        if call is None:
            return web.json_response({"code": 20404, "message": "not found", "status": 404}, status=404)
        if form.get("Status") == "canceled":
            self.cancels.append(sid)
            if call.state in ("queued", "ringing"):
                call.state = "canceled"
                self._spawn(self._status(call, "canceled"))
        return web.json_response({"sid": sid, "status": call.state, "to": call.to})

    # -- the phone call, as Twilio drives it -----------------------------------------------------

    async def _turn(self, rate: float | None, attr: str, item: Call | Message) -> None:
        """Twilio's queue: one after the other at `rate` per second. A call canceled while it waits, or a
        text past its validity period, leaves the queue when its turn comes without using a slot."""
        if rate is None:
            return
        queue = getattr(self, attr)
        if queue is None:
            queue = asyncio.Queue()
            setattr(self, attr, queue)
            self._spawn(self._dispatch(queue, rate))
        turn = asyncio.get_running_loop().create_future()
        queue.put_nowait((item, turn))
        await turn

    async def _dispatch(self, queue: asyncio.Queue[tuple[Call | Message, asyncio.Future[None]]], rate: float) -> None:
        while True:
            item, turn = await queue.get()
            skipped = item.state == "canceled" if isinstance(item, Call) else self._expired(item)
            if not turn.done():
                turn.set_result(None)
            if not skipped:
                await asyncio.sleep(1 / rate)

    @staticmethod
    def _expired(message: Message) -> bool:
        validity = message.form.get("ValidityPeriod")
        return validity is not None and time.monotonic() - message.created > float(validity)

    async def _run_call(self, call: Call) -> None:
        answer = self.answer.get(call.to, "silent")
        base = {"CallSid": call.sid, "AccountSid": self.account_sid, "From": call.form["From"], "To": call.to}
        await self._turn(self.cps, "_call_queue", call)
        if call.state == "canceled":  # stopped while it waited in Twilio's queue
            return
        call.placed, call.state = time.monotonic(), "ringing"
        if self.ring_s:
            await asyncio.sleep(self.ring_s)
            if call.state == "canceled":
                return
        if answer in ("busy", "no-answer", "failed"):
            call.state = answer
            await self._status(call, answer)
            return
        call.state = "in-progress"
        answered_by = "machine_start" if answer == "voicemail" else "human"
        url, params = call.form["Url"], {**base, "CallStatus": "in-progress", "AnsweredBy": answered_by}
        keys = list(answer) if answer not in ("voicemail", "silent") else []
        for _ in range(10):  # follow the TwiML: <Gather> (press a key or not), <Redirect>, <Hangup>
            status, xml = await self.post(url, params)
            assert status == 200, (status, xml)
            root = ET.fromstring(xml)
            call.said += [el.text or "" for el in root.iter("Say")]
            call.dialed += [(el.get("callerId"), [n.text or "" for n in el.iter("Number")]) for el in root.iter("Dial")]
            gather = root.find("Gather")
            redirect = root.find("Redirect")
            if gather is not None and keys:
                url, params = gather.get("action", ""), {**base, "CallStatus": "in-progress", "Digits": keys.pop(0)}
            elif redirect is not None:
                url, params = redirect.text or "", {**base, "CallStatus": "in-progress"}
            else:
                break
        call.state = "completed"
        await self._status(call, "completed")

    async def _status(self, call: Call, status: str) -> None:
        call.statuses.append(status)
        callback = call.form.get("StatusCallback")
        if callback:
            await self.post(callback, {"CallSid": call.sid, "CallStatus": status, "To": call.to})

    async def _deliver(self, message: Message, status: str) -> None:
        await self._turn(self.mps, "_text_queue", message)
        if self._expired(message):
            status, message.error_code = "failed", "30036"  # waited in the queue past its validity period
        await asyncio.sleep(0.05)
        message.status = status
        if message.form.get("StatusCallback"):
            form = {"MessageSid": message.sid, "MessageStatus": status, "To": message.to}
            if message.error_code:
                form["ErrorCode"] = message.error_code
            await self.post(message.form["StatusCallback"], form)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
