"""The one place that reads SMS replies (SPEC §5).

Accepted, in any case and with any spacing or surrounding punctuation: `ACK 4821`, `4821`,
`PASS 4821`, and a bare `ACK`, `1` or `PASS`, which only count when the number has exactly one open
page; and Twilio's opt-out and opt-in keywords (`STOP`, `START` and their kin, SPEC §11). Digits of other scripts count as their 0-9 equivalents. Anything else gets a short help
reply. Pure: the caller decides what a code means.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

ACK, PASS = "ack", "pass"
STOP, START = "stop", "start"  # SPEC §11: the number opts out of texts, or back in
CODE_DIGITS = 4

MAX_REPLY_CHARS = 200  # a reply is a few words; anything longer is not one (and is not scanned further)
_WITH_CODE = re.compile(r"(ACK|PASS|OK)?\s*([0-9]{3,8})", re.ASCII)
# Twilio's own opt-out and opt-in keywords (Advanced Opt-Out defaults): Twilio acts on them
# whatever we answer; we only remember the number's choice.
_OPT = {word: STOP for word in ("STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE")} | {
    word: START for word in ("START", "YES", "UNSTOP")
}
_BARE = {"ACK": ACK, "1": ACK, "OK": ACK, "PASS": PASS, "2": PASS}


@dataclass(frozen=True)
class Reply:
    action: str | None  # ack, pass, or None: not understood
    code: str | None = None  # None: a bare ACK / 1 / PASS


def _ascii_digits(text: str) -> str:
    """Digits of any script as 0-9: a phone set to Arabic-Indic (٤٨٢١) or full-width (４８２１)
    digits sends the same code the page carried."""
    return "".join(str(d) if (d := unicodedata.decimal(c, None)) is not None else c for c in text)


def parse(body: str) -> Reply:
    text = " ".join(_ascii_digits(body[:MAX_REPLY_CHARS]).upper().split()).strip(" .!?,;:'\"")
    if text in _OPT:
        return Reply(_OPT[text])
    if text in _BARE:
        return Reply(_BARE[text])
    match = _WITH_CODE.fullmatch(text)
    if match:
        word, code = match.groups()
        return Reply(PASS if word == "PASS" else ACK, code)
    return Reply(None)


def page_text(summary: str, code: str, limit: int = 300) -> str:
    """The SMS page: the summary trimmed to fit two segments, then the instruction with the code."""
    tail = f" Reply ACK {code} to take it, PASS {code} to pass."
    room = limit - len(tail)
    body = summary if len(summary) <= room else summary[: room - 1].rstrip() + "…"
    return body + tail


def reminder_text(summary: str, code: str, limit: int = 300) -> str:
    """The SMS asking the acker to confirm an expiring acknowledgement (SPEC §11)."""
    head = f"Still on it? Reply ACK {code}. You took: "
    room = limit - len(head)
    return head + (summary if len(summary) <= room else summary[: room - 1].rstrip() + "…")


HELP = "Reply ACK <code> to take an incident or PASS <code> to pass it on; the code is in the page."
