"""Logging: one line per record, phone numbers masked wherever they appear, secrets never formatted."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime

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


# The incident a line is about: set by the engine for each step; asyncio copies it into the tasks
# and worker threads a step starts, so page sends and their retries carry it too.
incident_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("incident_id", default=None)


class IncidentFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.incident_id = incident_var.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        incident = getattr(record, "incident_id", None)
        return f"{line} [incident={incident}]" if incident else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        incident = getattr(record, "incident_id", None)
        if incident:
            entry["incident_id"] = incident
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def handler(fmt: str = "text", stream: object = None) -> logging.Handler:
    out = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    out.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    out.addFilter(IncidentFilter())
    out.addFilter(MaskingFilter())
    return out


def setup(level: str = "INFO", fmt: str = "text") -> None:
    handler_ = handler(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler_]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "nats", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
