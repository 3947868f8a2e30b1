"""Signed, expiring acknowledgement tokens carried in push messages (itsdangerous).

A token names the incident and the contact it was sent to; the app returns it as
`Authorization: Bearer <token>` on `POST /api/v1/incidents/{id}/ack` (or `/pass`).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

MAX_AGE_S = 24 * 3600  # an incident can stay open for acknowledgment long after its first page


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class Grant:
    """What a valid token allows: this contact may take (or pass) this incident, for this leg's page."""

    contact: str
    cycle: int
    leg_index: int


class AckTokens:
    def __init__(self, key: str):
        self._serializer = URLSafeTimedSerializer(key, salt="escalator-push-ack")

    def issue(self, incident_id: str, contact: str, cycle: int, leg_index: int) -> str:
        return self._serializer.dumps({"i": incident_id, "c": contact, "y": cycle, "l": leg_index})

    def verify(self, token: str, incident_id: str, max_age: int = MAX_AGE_S) -> Grant:
        """What the token grants; raises InvalidToken if forged, expired or for another incident."""
        try:
            data = self._serializer.loads(token, max_age=max_age)
        except SignatureExpired:
            raise InvalidToken("token expired") from None
        except BadSignature:
            raise InvalidToken("token is not valid") from None
        if not isinstance(data, dict) or data.get("i") != incident_id or not isinstance(data.get("c"), str):
            raise InvalidToken("token is for another incident")
        return Grant(data["c"], int(data.get("y", 0)), int(data.get("l", 0)))


def signing_key(configured: SecretStr | None, data_dir: Path) -> str:
    """ESCALATOR_PUSH_SIGNING_KEY when set, else the key kept in the data dir."""
    return configured.get_secret_value() if configured else load_or_create_key(data_dir)


def load_or_create_key(data_dir: Path) -> str:
    """The signing key kept in the data dir (mode 0600), made on first start."""
    path = data_dir / "push-signing.key"
    if path.is_file():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
