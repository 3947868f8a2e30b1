"""Every TwiML document escalator answers with, built only with `twilio.twiml` (SPEC §5).

The call: the summary is said, then: press 1 to take it, 2 to pass it on, star to repeat. An
unanswered prompt is repeated a few times, then the call ends. A voicemail gets a short message
and never acknowledges anything: only a key press does.

Finishing the job (SPEC §11): key 1's confirmation offers a call to the incident's caller (key 1
again dials them from our number with `<Dial>`); an expiring acknowledgement's reminder call asks
the acker to press 1 if they are still on it.
"""

from __future__ import annotations

from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

PROMPT_ATTEMPTS = 3
GATHER_TIMEOUT_S = 8
INSTRUCTIONS = "Press 1 to take this incident. Press 2 to pass it on. Press star to hear it again."


def prompt(summary: str, gather_url: str, again_url: str | None) -> str:
    """Say the incident and wait for one key; with no key, go on to `again_url` (or say goodbye)."""
    return _ask(f"Urgent incident. {summary}. {INSTRUCTIONS}", gather_url, again_url)


def reminder(summary: str, gather_url: str, again_url: str | None) -> str:
    """An expiring acknowledgement's reminder: key 1 confirms the acker is still on it."""
    return _ask(f"You took {summary}. Press 1 if you are still on it.", gather_url, again_url)


def _ask(text: str, gather_url: str, again_url: str | None) -> str:
    """Say `text` and wait for one key into `gather_url`; with no key, `again_url` (or goodbye)."""
    response = VoiceResponse()
    gather = Gather(num_digits=1, action=gather_url, method="POST", timeout=GATHER_TIMEOUT_S, finish_on_key="")
    gather.say(text)
    response.append(gather)
    if again_url:
        response.redirect(again_url, method="POST")
    else:
        response.say("No key was pressed. Goodbye.")
        response.hangup()
    return str(response)


def confirmed(text: str, connect_url: str | None) -> str:
    """The acknowledgement's spoken confirmation; with a caller to connect to, key 1 dials them."""
    if connect_url is None:
        return say_and_hang_up(text + " Goodbye.")
    response = VoiceResponse()
    gather = Gather(num_digits=1, action=connect_url, method="POST", timeout=GATHER_TIMEOUT_S, finish_on_key="")
    gather.say(f"{text} Press 1 to be connected to the caller now.")
    response.append(gather)
    response.say("Goodbye.")
    response.hangup()
    return str(response)


def dial(caller: str, from_number: str) -> str:
    """Put the technician through to the caller, from our number (SPEC §11)."""
    response = VoiceResponse()
    response.say("Connecting you to the caller now.")
    dial_ = Dial(caller_id=from_number, timeout=30)
    dial_.number(caller)
    response.append(dial_)
    response.say("The call to the caller has ended. Goodbye.")
    response.hangup()
    return str(response)


def voicemail() -> str:
    response = VoiceResponse()
    response.say("This is escalator with an urgent incident for you. Please check your text messages.")
    response.hangup()
    return str(response)


def say_and_hang_up(text: str) -> str:
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return str(response)


def redirect(url: str) -> str:
    response = VoiceResponse()
    response.redirect(url, method="POST")
    return str(response)


def sms_reply(text: str | None) -> str:
    response = MessagingResponse()
    if text:
        response.message(text)
    return str(response)


def test_call() -> str:
    return say_and_hang_up("This is a test call from escalator. This phone receives pages. No action is needed. Goodbye.")
