"""The webhooks: what a technician's reply, key press, tap in the app, or a provider's status report
does to an incident, and what to answer.

escalator.web checks signatures and parses forms; this turns what arrived into the engine's one
acknowledgement path (Engine.acknowledge / pass_on) and its answer into words for the person.
Only a key press or a reply from the number a code was sent to acknowledges; a voicemail never does.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from escalator import clock, replies, twiml, walk
from escalator.ack_tokens import AckTokens, InvalidToken
from escalator.channels import twilio
from escalator.channels.twilio import callback_url
from escalator.answers import ACKNOWLEDGED, CONNECTED, PASSED, RENEWED, UNKNOWN, Answer
from escalator.engine import Engine
from escalator.ladders import E164_RE
from escalator.logs import mask_phone
from escalator.store import opt_outs
from escalator.store.callbacks import HandledCallbacks
from escalator.store.incidents import IncidentStore
from escalator.store.sms_codes import STRIKES, SmsCodes
from escalator.store.tables import IncidentRow, PageRow

log = logging.getLogger("escalator.webhooks")

T = TypeVar("T")

def closed_text(incident: IncidentRow) -> str:
    """What somebody who answers a closed incident's page (or an old code) is told."""
    if incident.status == walk.ACKNOWLEDGED:
        return f"Incident {incident.id} was already taken by {incident.acked_by}."
    if incident.status == walk.RESOLVED:
        return f"Incident {incident.id} is resolved. Nothing more to do."
    return f"Incident {incident.id} has moved on to the next person."


def answer_text(answer: Answer) -> str:
    """An acknowledgement or pass that changed nothing, in words for the person who sent it."""
    incident = answer.incident_id
    if answer.result == walk.TAKEN:
        return f"Incident {incident} was already taken by {answer.by}."
    if answer.result == walk.CLOSED:
        return f"Incident {incident} is resolved. Nothing more to do."
    if answer.result == walk.NOT_PAGED:
        return f"You were not paged for incident {incident}."
    if answer.result == walk.NOTHING_TO_PASS:
        return f"Everyone on the ladder has been paged for incident {incident}: there is nobody to pass it to."
    if answer.result == UNKNOWN:
        return f"There is no incident {incident}."
    if answer.result == walk.NO_CALL:
        return answer.reason[:1].upper() + answer.reason[1:] + "."
    return f"Incident {incident} has moved on to the next person."  # stale, or not on this leg


# What a page's row says the provider last told of it (escalator watch): Twilio's own words for a
# call or a text (from its status callback: lower-case letters and dashes, bounded), or ours.
_DELIVERY = re.compile(r"[a-z-]{1,20}")
ANSWERED, VOICEMAIL = "answered", "voicemail"


def _reminding(incident: IncidentRow, contact: str) -> bool:
    """Is this contact's expiring acknowledgement waiting on them (SPEC §11)?"""
    return incident.status == walk.ACKNOWLEDGED and incident.deadline is not None and incident.acked_by == contact


class Webhooks:
    def __init__(
        self, engine: Engine, store: IncidentStore, codes: SmsCodes, public_url: str, now: Callable[[], datetime] = clock.now,
        tokens: AckTokens | None = None, twilio_from: str | None = None,
    ):
        self.tokens = tokens
        self.twilio_from = twilio_from  # calls to the caller are placed from it (SPEC §11)
        self.engine = engine
        self.store = store
        self.codes = codes
        self.callbacks = HandledCallbacks(store.engine)
        self.public_url = public_url
        self.now = now

    # -- SMS ----------------------------------------------------------------------------------------

    async def sms(self, phone: str, body: str, sid: str, to: str = "") -> str | None:
        """An inbound text → the reply to send back (None: say nothing). Handled once per MessageSid.
        `to`: the number it was sent to (a STOP to another of the account's numbers is not about ours)."""
        return await self._once(f"sms:{sid}", lambda now: self._sms(phone, body, now, to), None)

    async def _once(self, key: str, act: Callable[[datetime], Awaitable[T]], replayed: T) -> T:
        """Act on a Twilio callback the first time its key is seen; a replay gets `replayed`. If
        acting fails, the key is forgotten again, so Twilio's own retry is acted on."""
        now = self.now()
        if not await asyncio.to_thread(self.callbacks.first, key, now):
            log.info("ignoring a replayed Twilio callback (%s)", key)
            return replayed
        try:
            return await act(now)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self.callbacks.forget, key))
            raise

    async def _sms(self, phone: str, body: str, now: datetime, to: str = "") -> str | None:
        reply = replies.parse(body)
        if reply.action in (replies.STOP, replies.START):
            return await self._opt(phone, reply.action, now, to)
        if reply.action is None:
            return replies.HELP
        open_pages = await asyncio.to_thread(self.codes.open_pages, phone)
        if reply.code is None:
            if not open_pages:
                return "You have no open pages."
            if len({p.incident_id for p in open_pages}) > 1:
                codes = ", ".join(p.code for p in open_pages[:5])
                return f"You have {len(open_pages)} open pages. Reply ACK with the code of the one you mean ({codes})."
            row = open_pages[0]
        else:
            row = next((p for p in open_pages if p.code == reply.code), None)
            if row is None:
                late = await asyncio.to_thread(self.codes.latest, phone, reply.code, now)
                if late is not None:  # a real code of this number, closed or replaced: answer politely
                    incident = await asyncio.to_thread(self.store.get, late.incident_id)
                    if incident is not None and incident.status in walk.ACTIVE and late.replaced_at is not None:
                        now_code = await asyncio.to_thread(self.codes.current, late.incident_id, late.page_key.split("#")[0])
                        if now_code is not None:
                            return f"That code was changed after too many wrong codes. Reply ACK {now_code.code} for incident {incident.id}."
                    if incident is not None and incident.status == walk.ACKNOWLEDGED and incident.acked_by == late.contact:
                        return f"You have incident {incident.id}: {incident.summary}. Thank you."  # already theirs
                    return closed_text(incident) if incident else replies.HELP
                return await self._wrong_code(phone, reply.code, now)
        if reply.action == replies.ACK:
            answer = await self.engine.acknowledge(row.incident_id, row.contact, walk.SMS, row.contact)
        else:
            answer = await self.engine.pass_on(row.incident_id, row.contact, walk.SMS, row.contact, row.cycle, row.leg_index)
        if answer.result in (ACKNOWLEDGED, RENEWED):
            caller = f" Caller: {answer.caller}." if answer.caller else ""  # SPEC §11: call them back from the text
            if answer.result == RENEWED:
                return f"Thank you: incident {row.incident_id} stays yours.{caller}"
            return f"You have incident {row.incident_id}: {answer.summary}.{caller} Thank you."
        if answer.result == PASSED:
            return f"Passed on. The next person is being paged for incident {row.incident_id}."
        return answer_text(answer)

    async def _opt(self, phone: str, action: str, now: datetime, to: str = "") -> None:
        """STOP or START (SPEC §11). Twilio answers these itself (and would not deliver our reply to
        a number that just opted out), so we say nothing: we only remember the number's choice.
        Twilio keeps an opt-out per pair of numbers: one sent to another of the account's numbers is
        not about ours."""
        if not E164_RE.fullmatch(phone) or (to and self.twilio_from and to != self.twilio_from):
            log.info("ignoring %s from %s to another number", action.upper(), mask_phone(phone))
            return None
        if action == replies.STOP:
            if await asyncio.to_thread(opt_outs.opt_out, self.store.engine, phone, now, opt_outs.STOP_REPLY):
                log.warning("%s texted STOP: its SMS pages fail until it texts START", mask_phone(phone))
        elif await asyncio.to_thread(opt_outs.opt_in, self.store.engine, phone):
            log.warning("%s texted START: its SMS pages go out again", mask_phone(phone))
        return None

    async def _wrong_code(self, phone: str, code: str, now: datetime) -> str:
        """A code this number never had. Guesses are counted; at the limit the number's codes are
        replaced and the new ones go to the number (Twilio sends the reply to it, whoever claimed
        to be it), so the person keeps acknowledging and a guesser starts over."""
        strikes = await asyncio.to_thread(self.codes.strike, phone, now)
        if strikes < STRIKES:
            return f"No open page has code {code}. " + replies.HELP
        replaced = await asyncio.to_thread(self.codes.replace_codes, phone, now)
        log.warning("%d wrong codes from %s: its %d open code(s) were replaced", strikes, mask_phone(phone), len(replaced))
        for row in replaced:
            await self.engine.note(row.incident_id, f"SMS code of {row.contact} replaced after {strikes} wrong codes from the number")
        if not replaced:
            return f"No open page has code {code}. Too many wrong codes from this number."
        listed = "; ".join(f"ACK {row.code} for incident {row.incident_id}" for row in replaced[:5])
        return f"Too many wrong codes from this number, so its codes were changed. Reply {listed}."

    # -- voice --------------------------------------------------------------------------------------

    def _url(self, path: str, incident_id: str, key: str, attempt: int) -> str:
        return callback_url(self.public_url, path, incident=incident_id, key=key, attempt=str(attempt))

    async def _page(self, incident_id: str, key: str) -> tuple[IncidentRow | None, PageRow | None]:
        return await asyncio.to_thread(self.store.get, incident_id), await asyncio.to_thread(self.store.page, incident_id, key)

    async def voice(self, incident_id: str, key: str, answered_by: str | None, attempt: int) -> str:
        """The call was answered (or is being prompted again)."""
        incident, page = await self._page(incident_id, key)
        if incident is None or page is None:
            return twiml.say_and_hang_up("This call is no longer needed. Goodbye.")
        if answered_by and answered_by.startswith(("machine", "fax")):
            await self.engine.note(incident_id, f"voice call to {page.contact} reached voicemail", (key, VOICEMAIL))
            return twiml.voicemail()
        if attempt == 1 and page.delivery != ANSWERED:
            await self.engine.note(incident_id, None, (key, ANSWERED))
        again = self._url("/twilio/voice", incident_id, key, attempt + 1) if attempt < twiml.PROMPT_ATTEMPTS else None
        gather = self._url("/twilio/gather", incident_id, key, attempt)
        if walk.is_reminder(key) and _reminding(incident, page.contact):
            return twiml.reminder(incident.summary, gather, again)
        if incident.status not in walk.ACTIVE:
            return twiml.say_and_hang_up(closed_text(incident) + " Goodbye.")
        return twiml.prompt(incident.summary, gather, again)

    async def gather(self, incident_id: str, key: str, digits: str, attempt: int, call_sid: str) -> str:
        """A key was pressed: 1 takes it, 2 passes it on, star repeats. Once per call and prompt."""
        if digits not in ("1", "2"):  # star, or another key: the prompt again, nothing acted on
            return await self._gather(incident_id, key, digits, attempt)
        replayed = twiml.say_and_hang_up("That key press was already received. Goodbye.")
        return await self._once(
            f"gather:{call_sid}:{incident_id}:{key}:{attempt}", lambda now: self._gather(incident_id, key, digits, attempt), replayed
        )

    async def _gather(self, incident_id: str, key: str, digits: str, attempt: int) -> str:
        incident, page = await self._page(incident_id, key)
        if incident is None or page is None:
            return twiml.say_and_hang_up("This call is no longer needed. Goodbye.")
        if digits not in ("1", "2"):  # star, or any other key: say it all again
            return twiml.redirect(self._url("/twilio/voice", incident_id, key, attempt))
        if digits == "1":
            answer = await self.engine.acknowledge(incident_id, page.contact, walk.VOICE, page.contact)
        else:
            answer = await self.engine.pass_on(incident_id, page.contact, walk.VOICE, page.contact, page.cycle, page.leg_index)
        if answer.result in (ACKNOWLEDGED, RENEWED):
            text = "Thank you. It stays yours." if answer.result == RENEWED else f"You have it. The incident is yours: {answer.summary}. Thank you."
            offer = answer.caller is not None and self.twilio_from is not None  # SPEC §11: key 1 again dials the caller
            return twiml.confirmed(text, self._url("/twilio/connect", incident_id, key, attempt) if offer else None)
        if answer.result == PASSED:
            return twiml.say_and_hang_up("Passed on. The next person is being paged. Goodbye.")
        return twiml.say_and_hang_up(answer_text(answer) + " Goodbye.")

    async def connect(self, incident_id: str, key: str, digits: str, attempt: int, call_sid: str) -> str:
        """After key 1's confirmation: key 1 again puts the acker through to the caller (SPEC §11).
        Once per call: a replayed key press dials nobody twice."""
        if digits != "1":
            return twiml.say_and_hang_up("Goodbye.")
        replayed = twiml.say_and_hang_up("That key press was already received. Goodbye.")
        return await self._once(f"connect:{call_sid}:{incident_id}:{key}", lambda now: self._connect(incident_id, key), replayed)

    async def _connect(self, incident_id: str, key: str) -> str:
        incident, page = await self._page(incident_id, key)
        if incident is None or page is None or not incident.caller or self.twilio_from is None:
            return twiml.say_and_hang_up("There is no caller to connect you to. Goodbye.")
        answer = await self.engine.connect_caller(incident_id, page.contact, page.contact)
        if answer.result != CONNECTED or answer.caller is None:
            return twiml.say_and_hang_up(answer_text(answer) + " Goodbye.")
        log.info("connecting %s to the caller %s for incident %s", page.contact, mask_phone(answer.caller), incident_id)
        return twiml.dial(answer.caller, self.twilio_from)

    # -- push ---------------------------------------------------------------------------------------

    async def push(self, incident_id: str, bearer: str | None, action: str) -> tuple[int, dict[str, str | None]]:
        """`POST /api/v1/incidents/{id}/ack|pass` from the app: (HTTP status, JSON body)."""
        if self.tokens is None:
            return 404, {"error": "push acknowledgements are not enabled"}
        if not bearer:
            return 401, {"error": "missing Authorization: Bearer <token>"}
        try:
            grant = self.tokens.verify(bearer, incident_id)
        except InvalidToken as exc:
            return 401, {"error": str(exc)}
        incident = await asyncio.to_thread(self.store.get, incident_id)
        if incident is None:
            return 404, {"error": f"no incident {incident_id}"}
        who = grant.contact
        if action == replies.ACK:
            answer = await self.engine.acknowledge(incident_id, who, walk.PUSH, who)
        else:
            answer = await self.engine.pass_on(incident_id, who, walk.PUSH, who, grant.cycle, grant.leg_index)
        incident = await asyncio.to_thread(self.store.get, incident_id)
        body = {"incident": incident_id, "status": incident.status, "acked_by": incident.acked_by}
        if answer.caller and answer.result in (ACKNOWLEDGED, RENEWED):
            body["caller"] = answer.caller  # SPEC §11: the app can offer to call them
        if answer.took_effect:
            return 200, body | {"result": answer.result}
        return 200, body | {"result": "unchanged", "reason": answer.result, "message": answer_text(answer)}

    # -- delivery status ----------------------------------------------------------------------------

    async def status(self, incident_id: str, key: str, channel: str, status: str, error_code: str | None) -> None:
        """Failures feed the "nobody reachable" rule; successes go to the timeline's notes."""
        page = await asyncio.to_thread(self.store.page, incident_id, key)
        if page is None or channel not in (walk.VOICE, walk.SMS):
            return
        if _DELIVERY.fullmatch(status) and page.delivery != VOICEMAIL:  # a voicemail's "completed" says less
            await self.engine.note(incident_id, None, (key, ANSWERED if status == "in-progress" else status))
        outcome = twilio.callback_outcome(channel, status)
        if outcome == twilio.FAILED:
            reason = f"{channel} {status}" + (f" (Twilio error {error_code})" if error_code else "")
            await self.engine.handle(incident_id, walk.PageFailed(IncidentStore.page_cmd(page), reason))
        elif outcome == twilio.FINISHED:
            await self.engine.note(incident_id, f"{channel} to {page.contact} {status}")
        elif outcome == twilio.STOPPED:
            why = "escalator stopped it: its leg ended or the incident was taken"
            note = f"{channel} to {page.contact} {status} while queued or ringing ({why})"
            await self.engine.note(incident_id, note)
