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

from escalator.errors import EscalatorError

MIN_KEY_BYTES = 32
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
    def __init__(self, key: str, previous: tuple[str, ...] = ()):
        # itsdangerous signs with the last key and accepts a signature by any of them: tokens
        # issued before a rotation stay valid while their old key is listed in `previous`.
        self._serializer = URLSafeTimedSerializer([*previous, key], salt="escalator-push-ack")

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
        cycle, leg_index = data.get("y", 0), data.get("l", 0)
        # Only tokens we signed get here, but a key that leaked must not buy a 500 either.
        if type(cycle) is not int or type(leg_index) is not int or not (0 <= cycle < 10**6 and 0 <= leg_index < 10**3):
            raise InvalidToken("token is not valid")
        return Grant(data["c"], cycle, leg_index)


def signing_key(configured: SecretStr | None, data_dir: Path) -> str:
    """ESCALATOR_PUSH_SIGNING_KEY when set, else the key kept in the data dir. Settings already
    refused a configured key that is too short; the file is checked here."""
    return configured.get_secret_value() if configured is not None else load_or_create_key(data_dir)


def load_or_create_key(data_dir: Path) -> str:
    """The signing key kept in the data dir (mode 0600), made on first start. A key file that others
    may read, or that holds a short key, stops start-up: a token signed with a known key
    acknowledges any incident."""
    path = data_dir / "push-signing.key"
    if path.is_file():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise EscalatorError(
                f"push signing key file {path} may be read by others (mode {mode:04o}); run: chmod 600 {path}"
            )
        key = path.read_text().strip()
        if len(key.encode()) < MIN_KEY_BYTES:
            raise EscalatorError(
                f"push signing key file {path} holds {len(key.encode())} bytes; at least {MIN_KEY_BYTES} are needed "
                "(delete it to have a new one generated, or set ESCALATOR_PUSH_SIGNING_KEY)"
            )
        return key
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
