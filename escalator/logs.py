"""Logging: one line per record, phone numbers masked wherever they appear, secrets never formatted."""

from __future__ import annotations

import logging
import re
import sys

_PHONE = re.compile(r"\+[1-9]\d{7,14}")


def mask_phone(phone: str | None) -> str:
    """+14155550101 → +1415*****01: enough to tell numbers apart, not enough to call."""
    if not phone:
        return "-"
    return phone[:5] + "*" * max(len(phone) - 7, 1) + phone[-2:]


class MaskingFilter(logging.Filter):
    """Defence in depth: whatever a message says, an E.164 number in it is masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _PHONE.sub(lambda m: mask_phone(m.group(0)), message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(MaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("apscheduler", "uvicorn.access", "nats", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
