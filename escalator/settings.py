"""The one settings object (SPEC §6): environment with prefix ESCALATOR_, or a `.env` file."""

from __future__ import annotations

import getpass
import ipaddress
import os
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from escalator.ack_tokens import MIN_KEY_BYTES
from escalator.errors import InvalidInput, Problem
from escalator.ladders import E164_RE, NAME_RE

ENV_PREFIX = "ESCALATOR_"


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")) or not value.split("://", 1)[1]:
        raise ValueError("must be an http:// or https:// URL")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore", validate_default=True
    )

    nats_url: str = "nats://127.0.0.1:4222"
    # NATS is locked (SPEC §6 "Trust"): a credentials file (JWT + seed), or a user and password,
    # or a token, from a Secret; TLS with this CA bundle, and a client certificate if the server
    # asks for one.
    nats_creds: Path | None = None
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    database_url: str | None = None
    data_dir: Path = Path(".escalator")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    public_url: str = "http://127.0.0.1:8080"
    default_ladder: str | None = None
    heartbeat_ladder: str | None = None  # SPEC §11: where a silent publisher's incident walks
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_api_url: str = "https://api.twilio.com"
    fcm_credentials: Path | None = None
    fcm_api_url: str = "https://fcm.googleapis.com"
    dry_run: bool | None = None
    actor: str | None = None
    # Signs the acknowledgement tokens in push messages; generated into the data dir when unset.
    # At least 32 bytes; set but empty is an error, not "unset".
    push_signing_key: SecretStr | None = None
    # Keys of before a rotation, comma-separated: tokens they signed are still accepted.
    push_previous_keys: SecretStr | None = None
    # Ask iOS for a critical alert (needs Apple's entitlement); otherwise time-sensitive.
    push_critical: bool = False
    # Log lines: "text" for people, "json" for log pipelines (one object per line, with incident_id).
    log_format: Literal["text", "json"] = "text"
    # JetStream replicas for the INCIDENTS and ESCALATIONS streams: 3 on a production cluster.
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)
    # Active-active replicas (PostgreSQL): this replica's name in incident leases. Default
    # "<hostname>-<pid>": the pod name in Kubernetes, where the process is PID 1, so a restarted
    # container takes its own leases back at once. Two processes must never share one.
    replica_id: str | None = Field(default=None, min_length=1, max_length=200)
    # How long a lease outlives its last renewal: a dead replica's incidents are taken over after
    # at most this plus a second. Renewed every third of it.
    lease_seconds: float = Field(default=10.0, ge=2.0, le=60.0)
    # Tests and drills only: every acknowledgment window is multiplied by this (0.01-1).
    window_scale: float = Field(default=1.0, ge=0.01, le=1.0)

    @field_validator("nats_url")
    @classmethod
    def _nats_urls(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("needs at least one nats:// URL")
        for server in servers:
            if not server.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"{server!r} is not a nats://, tls://, ws:// or wss:// URL")
        return ",".join(servers)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value.strip())
        except ArgumentError:
            raise ValueError("is not a SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db)") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError("only sqlite:// and postgresql+psycopg:// databases are supported")
        return value.strip()

    @field_validator("public_url", "twilio_api_url", "fcm_api_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("default_ladder", "heartbeat_ladder")
    @classmethod
    def _ladder_id(cls, value: str | None) -> str | None:
        if value is not None and not NAME_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a ladder name")
        return value or None

    @field_validator("twilio_from")
    @classmethod
    def _from_number(cls, value: str | None) -> str | None:
        if value is not None and not E164_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not an E.164 phone number like +14155550100")
        return value or None

    @field_validator("fcm_credentials", "nats_creds", "nats_tls_ca", "nats_tls_cert", "nats_tls_key")
    @classmethod
    def _credentials_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("push_signing_key")
    @classmethod
    def _push_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_KEY_BYTES:
            raise ValueError(
                f"must be at least {MIN_KEY_BYTES} bytes (it is {len(value.get_secret_value().encode())}); "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        return value

    @field_validator("push_previous_keys")
    @classmethod
    def _previous_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        for i, key in enumerate(value.get_secret_value().split(",")):
            if len(key.strip().encode()) < MIN_KEY_BYTES:
                raise ValueError(f"key {i + 1} is shorter than {MIN_KEY_BYTES} bytes")
        return value

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        return self

    @model_validator(mode="after")
    def _nats_trust(self) -> Settings:
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ValueError("ESCALATOR_NATS_TLS_CERT and ESCALATOR_NATS_TLS_KEY go together: set both or neither")
        ways = [name for name, value in (("ESCALATOR_NATS_CREDS", self.nats_creds), ("ESCALATOR_NATS_USER", self.nats_user),
                                         ("ESCALATOR_NATS_TOKEN", self.nats_token)) if value]
        if len(ways) > 1:
            raise ValueError(f"set one way to log in to NATS, not {' and '.join(ways)}")
        if (self.nats_user is None) != (self.nats_password is None):
            raise ValueError("ESCALATOR_NATS_USER and ESCALATOR_NATS_PASSWORD go together")
        return self

    @model_validator(mode="after")
    def _provider_urls(self) -> Settings:
        """A provider URL other than the real one receives the account's credentials (Twilio's
        auth token, Google's access tokens): anything but https to a non-loopback host is refused,
        so a stray .env cannot send them in clear text across a network."""
        for name, value, default in (("ESCALATOR_TWILIO_API_URL", self.twilio_api_url, "https://api.twilio.com"),
                                     ("ESCALATOR_FCM_API_URL", self.fcm_api_url, "https://fcm.googleapis.com")):
            if value != default and not value.startswith("https://") and not _loopback(value):
                raise ValueError(f"{name} must be https:// unless it points at this machine (loopback); got {value}")
        return self

    # -- derived values -------------------------------------------------------------------------

    @property
    def previous_push_keys(self) -> tuple[str, ...]:
        raw = self.push_previous_keys.get_secret_value() if self.push_previous_keys else ""
        return tuple(k.strip() for k in raw.split(",") if k.strip())

    @property
    def nats_servers(self) -> list[str]:
        return self.nats_url.split(",")

    @property
    def database(self) -> str:
        """The SQLAlchemy URL to use: the configured one, else a SQLite file in the data dir."""
        return self.database_url or f"sqlite:///{self.data_dir / 'escalator.db'}"

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token and self.twilio_from)

    @property
    def fcm_configured(self) -> bool:
        return self.fcm_credentials is not None

    @property
    def dry_run_effective(self) -> bool:
        """Dry-run unless told otherwise, and always when no provider is configured at all."""
        if self.dry_run is not None:
            return self.dry_run
        return not (self.twilio_configured or self.fcm_configured)

    @property
    def replica(self) -> str:
        return self.replica_id or f"{socket.gethostname()}-{os.getpid()}"

    def default_actor(self) -> str:
        if self.actor:
            return self.actor
        try:
            return getpass.getuser()
        except Exception:  # no user name in a bare container
            return "unknown"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; a bad value is refused naming its variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            name = ENV_PREFIX + str(err["loc"][0]).upper() if err["loc"] else "settings"
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(Problem(msg, field=name))
        raise InvalidInput(problems) from None
