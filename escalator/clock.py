"""The one clock. Everything that needs "now" asks here (or takes it as an argument)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)
