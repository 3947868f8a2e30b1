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


_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@")


def mask(text: str) -> str:
    """Phone numbers masked, credentials in URLs (user:password@) removed."""
    text = _PHONE.sub(lambda m: mask_phone(m.group(0)), text)
    return _URL_USERINFO.sub(lambda m: m.group("scheme") + "***@", text)


class MaskingFilter(logging.Filter):
    """Defence in depth: whatever a message or a traceback says, numbers and URL credentials are masked."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:  # the handler reuses exc_text: mask it once, here
            record.exc_text = mask(self._formatter.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
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
