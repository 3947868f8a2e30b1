"""SMS replies, on plain strings."""

from __future__ import annotations

import pytest

from escalator import replies
from escalator.replies import ACK, PASS, Reply, page_text, parse


@pytest.mark.parametrize(
    "body, expected",
    [
        ("ACK 4821", Reply(ACK, "4821")),
        ("ack 4821", Reply(ACK, "4821")),
        ("  Ack   4821  ", Reply(ACK, "4821")),
        ("ack4821", Reply(ACK, "4821")),
        ("4821", Reply(ACK, "4821")),
        ("4821.", Reply(ACK, "4821")),
        ("PASS 4821", Reply(PASS, "4821")),
        ("pass\n4821", Reply(PASS, "4821")),
        ("ACK", Reply(ACK)),
        ("ack!", Reply(ACK)),
        ("1", Reply(ACK)),
        ("ok", Reply(ACK)),
        ("Pass", Reply(PASS)),
        ("2", Reply(PASS)),
        ("", Reply(None)),
        ("on my way", Reply(None)),
        ("ACK 48", Reply(None)),
        ("ACK 4821 4822", Reply(None)),
        ("STOP", Reply(replies.STOP)),
        ("stop all", Reply(replies.STOP)),
        ("Unsubscribe.", Reply(replies.STOP)),
        ("START", Reply(replies.START)),
        ("unstop", Reply(replies.START)),
        ("STOP 4821", Reply(None)),
        ("ACK -4821", Reply(None)),
        ("ACK ٤٨٢١", Reply(ACK, "4821")),  # Arabic-Indic digits
        ("４８２１", Reply(ACK, "4821")),  # full-width digits
        ("pass ४८२१", Reply(PASS, "4821")),  # Devanagari digits
        ("ACK 4821 " + "x" * 300, Reply(None)),  # longer than any reply: not scanned
        ("ACK ²³⁴⁵", Reply(None)),  # superscripts are not decimal digits
    ],
)
def test_parse(body: str, expected: Reply) -> None:
    assert parse(body) == expected


def test_page_text_carries_the_literal_ack_code_and_fits_two_segments() -> None:
    text = page_text("No heat at 12 Elm St, elderly resident", "4821")
    assert text == "No heat at 12 Elm St, elderly resident Reply ACK 4821 to take it, PASS 4821 to pass."
    long = page_text("x" * 280, "0042")
    assert len(long) <= 300 and "ACK 0042" in long and long.endswith("PASS 0042 to pass.") and "…" in long
