"""The NATS JetStream connection: how escalator logs in (Trust), connects, and the two streams."""

from __future__ import annotations

import dataclasses
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError

log = logging.getLogger("escalator.jetstream")

INCIDENTS = StreamConfig(name="INCIDENTS", subjects=["incidents.>"], duplicate_window=600.0, max_age=7 * 86400.0)
ESCALATIONS = StreamConfig(name="ESCALATIONS", subjects=["escalations.>"], duplicate_window=600.0, max_age=30 * 86400.0)


@dataclass(frozen=True)
class Trust:
    """How escalator proves who it is to NATS, and checks NATS is who it says (SPEC §6 "Trust")."""

    creds: Path | None = None  # a .creds file: the user's JWT and nkey seed
    user: str | None = None
    password: str | None = None
    token: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def of(cls, settings: Any) -> Trust:
        secret = lambda value: value.get_secret_value() if value is not None else None  # noqa: E731
        return cls(
            settings.nats_creds, settings.nats_user, secret(settings.nats_password), secret(settings.nats_token),
            settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key,
        )

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.creds is not None:
            out["user_credentials"] = str(self.creds)
        if self.user is not None:
            out["user"], out["password"] = self.user, self.password
        if self.token is not None:
            out["token"] = self.token
        if self.tls_ca is not None or self.tls_cert is not None:
            context = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
            if self.tls_cert is not None:
                context.load_cert_chain(str(self.tls_cert), str(self.tls_key) if self.tls_key else None)
            out["tls"] = context
        return out


# The daemon's replies (JetStream API answers, the messages its pull consumer fetches) arrive on
# inboxes under this prefix, which deploy/nats lets no other user subscribe to.
DAEMON_INBOX = "_INBOX_escalator"


async def connect(
    servers: list[str], name: str = "escalator", forever: bool = True, trust: Trust | None = None,
    inbox_prefix: str = "_INBOX", **callbacks: Any,
) -> Client:
    """With `forever` (the daemon) keep trying, also for the first connection; without (the CLI) fail fast."""
    if forever:
        options: dict[str, Any] = {"max_reconnect_attempts": -1, "allow_reconnect": True}
    else:
        options = {"max_reconnect_attempts": 1, "allow_reconnect": False}
    return await nats.connect(
        servers=servers, name=name, connect_timeout=2, reconnect_time_wait=1, inbox_prefix=inbox_prefix, **options,
        **(trust or Trust()).options(), **callbacks,
    )


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the streams if missing; bring an existing stream to the configured replica count."""
    for config in (INCIDENTS, ESCALATIONS):
        try:
            info = await js.stream_info(config.name)
            if info.config.num_replicas != replicas:
                log.warning("stream %s has %s replicas; scaling to %d", config.name, info.config.num_replicas, replicas)
                await js.update_stream(dataclasses.replace(info.config, num_replicas=replicas))
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(dataclasses.replace(config, num_replicas=replicas))
                log.info("created stream %s", config.name)
            except BadRequestError as exc:  # another replica created it between the two calls
                if "already in use" not in str(exc):
                    raise
