"""SPEC §6: one settings object, refusals naming the variable, secrets kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from escalator.errors import InvalidInput
from escalator.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("ESCALATOR_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults(tmp_path: Path) -> None:
    s = load_settings()
    assert s.nats_servers == ["nats://127.0.0.1:4222"]
    assert s.data_dir == tmp_path / ".escalator"
    assert s.database == f"sqlite:///{tmp_path / '.escalator' / 'escalator.db'}"
    assert (s.http_host, s.http_port, s.public_url) == ("127.0.0.1", 8080, "http://127.0.0.1:8080")
    assert s.twilio_api_url == "https://api.twilio.com" and s.fcm_api_url == "https://fcm.googleapis.com"
    assert s.default_ladder is None and s.dry_run_effective is True


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ESCALATOR_HTTP_PORT=9090\nESCALATOR_DEFAULT_LADDER=after-hours\n")
    monkeypatch.setenv("ESCALATOR_NATS_URL", "nats://a:4222, nats://b:4222")
    monkeypatch.setenv("ESCALATOR_PUBLIC_URL", "https://pager.example.com/")
    s = load_settings()
    assert s.http_port == 9090 and s.default_ladder == "after-hours"
    assert s.nats_servers == ["nats://a:4222", "nats://b:4222"]
    assert s.public_url == "https://pager.example.com"


def test_dry_run_follows_provider_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESCALATOR_TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("ESCALATOR_TWILIO_AUTH_TOKEN", "very-secret-token")
    monkeypatch.setenv("ESCALATOR_TWILIO_FROM", "+14155550100")
    s = load_settings()
    assert s.twilio_configured and s.dry_run_effective is False
    assert "very-secret-token" not in repr(s) and "very-secret-token" not in str(s.model_dump())
    monkeypatch.setenv("ESCALATOR_DRY_RUN", "true")
    assert load_settings().dry_run_effective is True


@pytest.mark.parametrize(
    "variable, value, words",
    [
        ("ESCALATOR_HTTP_PORT", "eighty", "integer"),
        ("ESCALATOR_HTTP_PORT", "70000", "less than or equal"),
        ("ESCALATOR_NATS_URL", "http://x:4222", "not a nats://"),
        ("ESCALATOR_DATABASE_URL", "mysql://x/y", "only sqlite"),
        ("ESCALATOR_DATABASE_URL", "not a url", "not a SQLAlchemy URL"),
        ("ESCALATOR_PUBLIC_URL", "pager.example.com", "http:// or https://"),
        ("ESCALATOR_TWILIO_FROM", "555-0100", "E.164"),
        ("ESCALATOR_DEFAULT_LADDER", "After Hours", "not a ladder name"),
        ("ESCALATOR_FCM_CREDENTIALS", "/nonexistent/sa.json", "no such file"),
        ("ESCALATOR_DRY_RUN", "perhaps", "boolean"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, variable, value, words) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidInput) as info:
        load_settings()
    (problem,) = info.value.problems
    assert problem.field == variable and words in problem.message
    assert "\n" not in str(problem)


def test_database_password_is_hidden_when_shown() -> None:
    from escalator.store.db import display_url

    shown = display_url("postgresql+psycopg://escalator:hunter2@db:5432/escalator")
    assert "hunter2" not in shown and "escalator@db" not in shown and "***" in shown


def test_logs_mask_phones_and_url_credentials_even_in_tracebacks() -> None:
    import logging

    from escalator.logs import MaskingFilter

    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "paging %s via nats://user:hunter2@nats:4222", ("+14155550101",), None)
    try:
        raise RuntimeError("INSERT failed [parameters: ('+14155550199', 'postgresql://esc:pw@db/x')]")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert MaskingFilter().filter(record)
    text = logging.Formatter().format(record)
    for secret in ("+14155550101", "+14155550199", "hunter2", ":pw@"):
        assert secret not in text, secret
    assert "+1415*****01" in text and "nats://***@nats:4222" in text


def test_sql_errors_do_not_carry_parameters(tmp_path) -> None:
    from escalator.store.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/x.db")
    assert engine.hide_parameters
    engine.dispose()


@pytest.mark.parametrize("key", ["", "x", "k" * 31])
def test_a_short_or_empty_push_signing_key_stops_start_up(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("ESCALATOR_PUSH_SIGNING_KEY", key)
    with pytest.raises(InvalidInput) as info:
        load_settings()
    problem = str(info.value.problems[0])
    assert "ESCALATOR_PUSH_SIGNING_KEY" in problem and "at least 32 bytes" in problem and key not in problem.split(":")[-1].split()


def test_previous_push_keys_are_checked_and_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESCALATOR_PUSH_SIGNING_KEY", "n" * 40)
    monkeypatch.setenv("ESCALATOR_PUSH_PREVIOUS_KEYS", "a" * 32 + ", " + "b" * 33)
    assert load_settings().previous_push_keys == ("a" * 32, "b" * 33)
    monkeypatch.setenv("ESCALATOR_PUSH_PREVIOUS_KEYS", "a" * 32 + ",short")
    with pytest.raises(InvalidInput, match="key 2 is shorter than 32 bytes"):
        load_settings()


@pytest.mark.parametrize(
    "variable, url, ok",
    [
        ("ESCALATOR_TWILIO_API_URL", "http://twilio.attacker.example", False),
        ("ESCALATOR_TWILIO_API_URL", "http://10.0.0.5:8080", False),
        ("ESCALATOR_FCM_API_URL", "http://fcm.example.com", False),
        ("ESCALATOR_TWILIO_API_URL", "https://sandbox.example.com", True),
        ("ESCALATOR_TWILIO_API_URL", "http://127.0.0.1:9999", True),
        ("ESCALATOR_TWILIO_API_URL", "http://localhost:9999", True),
        ("ESCALATOR_FCM_API_URL", "http://[::1]:9999", True),
    ],
)
def test_provider_urls_must_be_https_unless_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable, url, ok) -> None:
    (tmp_path / ".env").write_text(f"{variable}={url}\n")  # the stray .env of the finding
    if ok:
        load_settings()
        return
    with pytest.raises(InvalidInput) as info:
        load_settings()
    assert f"{variable} must be https://" in str(info.value.problems[0])


def test_nats_trust_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from escalator.jetstream import Trust

    creds = tmp_path / "escalator.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    monkeypatch.setenv("ESCALATOR_NATS_USER", "escalator")
    monkeypatch.setenv("ESCALATOR_NATS_PASSWORD", "nats-secret-password")
    s = load_settings()
    assert Trust.of(s).options() == {"user": "escalator", "password": "nats-secret-password"}
    assert "nats-secret-password" not in repr(s)
    monkeypatch.setenv("ESCALATOR_NATS_CREDS", str(creds))
    with pytest.raises(InvalidInput, match="one way to log in to NATS"):
        load_settings()
    monkeypatch.delenv("ESCALATOR_NATS_USER")
    monkeypatch.delenv("ESCALATOR_NATS_PASSWORD")
    assert Trust.of(load_settings()).options() == {"user_credentials": str(creds)}
    monkeypatch.setenv("ESCALATOR_NATS_TLS_CERT", str(creds))
    with pytest.raises(InvalidInput, match="ESCALATOR_NATS_TLS_CERT and ESCALATOR_NATS_TLS_KEY go together"):
        load_settings()
    monkeypatch.setenv("ESCALATOR_NATS_TLS_CA", str(tmp_path / "missing-ca.pem"))
    with pytest.raises(InvalidInput, match="ESCALATOR_NATS_TLS_CA: no such file"):
        load_settings()
