"""NATS locked as SPEC §6 "Trust" says, against a real nats-server: the account layout shipped in
deploy/nats (a publisher may publish incidents, not acknowledge them; only escalator reads them),
TLS with a CA bundle and a client certificate, and a credentials file (JWT + nkey seed)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import subprocess
import time
from pathlib import Path

import nats
import pytest

from escalator.jetstream import Trust
from tests.recording import RecordingChannel
from tests.conftest import REPO, Cli, write
from tests.harness import BIN, eventually, free_port, running_daemon
from tests.test_engine import PEOPLE, ladders, settings, urgent  # noqa: F401 - fixtures

PASSWORDS = {
    "ESCALATOR_NATS_PASSWORD": "escalator-pw-" + "e" * 20, "PUBLISHER_NATS_PASSWORD": "publisher-pw-" + "p" * 20,
    "OPERATOR_NATS_PASSWORD": "operator-pw-" + "o" * 20, "OBSERVER_NATS_PASSWORD": "observer-pw-" + "b" * 20,
}


class ConfiguredNats:
    """nats-server started from a configuration file (what deploy/ ships is included as it is)."""

    def __init__(self, root: Path, body: str, env: dict[str, str] | None = None, scheme: str = "nats"):
        self.root, self.port = root, free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        self.config = write(root / "nats.conf", f'listen: 127.0.0.1:{self.port}\njetstream {{ store_dir: "{root / "js"}" }}\n{body}\n')
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ConfiguredNats:
        binary = shutil.which("nats-server", path=str(BIN))
        self.process = subprocess.Popen([binary, "-c", str(self.config)], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        import socket

        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise AssertionError(self.process.stdout.read().decode()[-2000:]) from None
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def locked_nats(tmp_path: Path):
    root = tmp_path / "nats"
    root.mkdir()
    shutil.copy(REPO / "deploy/nats/escalator-accounts.conf", root / "escalator-accounts.conf")
    with ConfiguredNats(root, 'include "escalator-accounts.conf"', PASSWORDS) as server:
        yield server


async def _client(url: str, user: str | None, errors: list[str], **extra) -> nats.NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    auth = {"user": user, "password": PASSWORDS[f"{user.upper()}_NATS_PASSWORD"]} if user else {}
    return await nats.connect(url, error_cb=on_error, allow_reconnect=False, max_reconnect_attempts=1, **auth, **extra)


def test_the_shipped_account_layout_lets_each_role_do_only_its_part(ladders, db_url, locked_nats, tmp_path, cli: Cli) -> None:
    recorder = RecordingChannel("all")
    url = locked_nats.url
    config = settings(db_url, locked_nats, tmp_path, nats_user="escalator", nats_password=PASSWORDS["ESCALATOR_NATS_PASSWORD"])

    async def scenario():
        anonymous: list[str] = []
        with pytest.raises(Exception):
            await _client(url, None, anonymous)
        async with running_daemon(config, recorder) as daemon:
            assert (await daemon.readiness())["nats"]["ok"]
            pub_errors: list[str] = []
            publisher = await _client(url, "publisher", pub_errors)
            ack = await publisher.jetstream().publish("incidents.urgent", json.dumps(urgent("t-1", "slow")).encode(), timeout=5)
            assert ack.stream == "INCIDENTS"
            await recorder.wait_for(3)
            # everything else a publisher might try is refused by the server itself
            with pytest.raises(Exception):
                await publisher.jetstream().publish("incidents.ack", json.dumps({"id": "t-1", "by": "alice"}).encode(), timeout=2)
            with pytest.raises(Exception):
                await publisher.jetstream().publish("incidents.resolve", json.dumps({"id": "t-1"}).encode(), timeout=2)
            await publisher.subscribe("escalations.>")
            await publisher.subscribe("_INBOX_escalator.>")  # the messages JetStream delivers to escalator
            with pytest.raises(Exception):
                await publisher.jetstream().stream_info("INCIDENTS")
            # A publish whose reply subject aims JetStream's acknowledgement at escalator's own
            # subjects: the acknowledgement goes back to the publisher's account, never there.
            injected: list[bytes] = []

            async def on_injected(msg) -> None:
                injected.append(msg.data)

            watcher = await nats.connect(url, user="escalator", password=PASSWORDS["ESCALATOR_NATS_PASSWORD"], inbox_prefix="_INBOX_escalator")
            await watcher.subscribe("escalations.>", cb=on_injected)
            await watcher.flush()
            before = (await watcher.jetstream().stream_info("ESCALATIONS")).state.messages
            for target in ("escalations.acknowledged", "$JS.API.STREAM.PURGE.INCIDENTS", "$JS.API.STREAM.DELETE.ESCALATIONS"):
                await publisher.publish("incidents.urgent", json.dumps(urgent(f"inj-{len(injected)}", "slow")).encode(), reply=target)
            await publisher.flush()
            await asyncio.sleep(1.0)
            stream_after = await watcher.jetstream().stream_info("ESCALATIONS")
            incidents_after = await watcher.jetstream().stream_info("INCIDENTS")
            await watcher.close()
            still_open = daemon.store.get("t-1").status
            obs_errors: list[str] = []
            observer = await _client(url, "observer", obs_errors)
            seen: list[dict] = []

            async def on_event(msg) -> None:
                seen.append(json.loads(msg.data))

            await observer.subscribe("escalations.>", cb=on_event)
            await observer.publish("incidents.resolve", json.dumps({"id": "t-1"}).encode())
            await observer.flush()
            # the operator tool (the real CLI, with the operator's login) may acknowledge
            cli.env.update({"ESCALATOR_NATS_URL": url, "ESCALATOR_NATS_USER": "publisher",
                            "ESCALATOR_NATS_PASSWORD": PASSWORDS["PUBLISHER_NATS_PASSWORD"]})
            refused = await asyncio.to_thread(cli, "incident", "ack", "t-1", "--by", "mallory")
            cli.env.update({"ESCALATOR_NATS_USER": "operator", "ESCALATOR_NATS_PASSWORD": PASSWORDS["OPERATOR_NATS_PASSWORD"]})
            allowed = await asyncio.to_thread(cli, "incident", "ack", "t-1", "--by", "ops-desk")
            await eventually(lambda: daemon.store.get("t-1").status == "acknowledged")
            await eventually(lambda: any(e["event"] == "acknowledged" for e in seen))
            await publisher.close()
            await observer.close()
            injection = (injected, before, stream_after.state.messages, incidents_after.state.messages)
            return anonymous, pub_errors, still_open, obs_errors, refused, allowed, daemon.store.get("t-1"), injection

    anonymous, pub_errors, still_open, obs_errors, refused, allowed, row, injection = asyncio.run(scenario())
    injected, events_before, events_after, incidents_kept = injection
    assert not [m for m in injected if b'"stream"' in m]  # no JetStream acknowledgement landed on escalations.>
    assert all(json.loads(m).get("event") for m in injected)  # only escalator's own events
    assert incidents_kept >= 4  # the stream was neither purged nor deleted
    assert any("authorization violation" in e.lower() for e in anonymous)
    violations = " | ".join(pub_errors).lower()
    for subject in ("incidents.ack", "incidents.resolve", "escalations.>", "_inbox_escalator.>", "$js.api.stream.info.incidents"):
        assert "permissions violation" in violations and subject in violations, (subject, pub_errors)
    assert still_open == "open"
    assert any('publish to "incidents.resolve"' in e.lower() for e in obs_errors)
    assert refused.exit_code == 1 and "permissions violation" in refused.stderr.lower() and len(refused.stderr.splitlines()) == 1
    assert allowed.exit_code == 0 and (row.status, row.acked_by) == ("acknowledged", "ops-desk")


# -- TLS ----------------------------------------------------------------------------------------------


def _certificates(root: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    now = dt.datetime.now(dt.UTC)
    out: dict[str, Path] = {}

    def save(name: str, key, cert) -> None:
        out[f"{name}.key"] = root / f"{name}.key"
        out[f"{name}.key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        out[f"{name}.pem"] = root / f"{name}.pem"
        out[f"{name}.pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    save("ca", ca_key, ca)
    for who, usage, san in (("server", ExtendedKeyUsageOID.SERVER_AUTH, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                            ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("escalator")])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(who)).issuer_name(ca.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=1)).add_extension(x509.SubjectAlternativeName(san), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        save(who, key, cert)
    return out


def test_tls_with_a_ca_bundle_and_a_client_certificate(ladders, db_url, tmp_path) -> None:
    certs = _certificates(tmp_path)
    tls = (f'tls {{ cert_file: "{certs["server.pem"]}", key_file: "{certs["server.key"]}", ca_file: "{certs["ca.pem"]}", '
           "verify: true }")
    recorder = RecordingChannel("all")

    async def scenario(server: ConfiguredNats):
        trusted = settings(db_url, server, tmp_path, nats_tls_ca=certs["ca.pem"], nats_tls_cert=certs["client.pem"],
                           nats_tls_key=certs["client.key"])
        async with running_daemon(trusted, recorder) as daemon:
            good = await daemon.readiness()
            client_tls = Trust(tls_ca=certs["ca.pem"], tls_cert=certs["client.pem"], tls_key=certs["client.key"]).options()["tls"]
            nc = await nats.connect(server.url, tls=client_tls)
            await nc.jetstream().publish("incidents.urgent", json.dumps(urgent("tls-1", "slow")).encode(), timeout=5)
            await nc.close()
            await recorder.wait_for(3)
        untrusting = settings(db_url, server, tmp_path / "other", nats_tls_cert=certs["client.pem"], nats_tls_key=certs["client.key"])
        async with running_daemon(untrusting, RecordingChannel("all")) as daemon:  # the system CAs do not know the test CA
            await asyncio.sleep(1)
            bad = await daemon.readiness()
        return good, bad

    with ConfiguredNats(tmp_path / "nats", tls, scheme="tls") as server:
        good, bad = asyncio.run(scenario(server))
    assert good["nats"] == {"ok": True}
    assert bad["nats"]["ok"] is False and "certificate" in bad["nats"]["error"].lower()
    assert {p.page.incident_id for p in recorder.pages} == {"tls-1"}


# -- a credentials file --------------------------------------------------------------------------------


def test_a_credentials_file_logs_in_and_its_permissions_hold(ladders, db_url, tmp_path) -> None:
    """Operator mode (JWTs): ESCALATOR_NATS_CREDS logs escalator in; a publisher's credentials
    publish an incident and are refused an acknowledgement by the server."""
    from tests.nats_jwt import Operator

    operator = Operator()
    creds = write(tmp_path / "escalator.creds", operator.creds(
        "escalator", ["escalations.>", "$JS.API.>", "$JS.ACK.INCIDENTS.>"], ["_INBOX_escalator.>", "escalations.>"]))
    creds.chmod(0o600)
    publisher = write(tmp_path / "publisher.creds", operator.creds("publisher", ["incidents.urgent", "incidents.heartbeat"], ["_INBOX.>"]))
    recorder = RecordingChannel("all")

    async def scenario(server: ConfiguredNats):
        async with running_daemon(settings(db_url, server, tmp_path, nats_creds=creds), recorder) as daemon:
            ready = await daemon.readiness()
            errors: list[str] = []

            async def on_error(exc: Exception) -> None:
                errors.append(str(exc))

            nc = await nats.connect(server.url, user_credentials=str(publisher), error_cb=on_error)
            await nc.jetstream().publish("incidents.urgent", json.dumps(urgent("jwt-1", "slow")).encode(), timeout=5)
            await recorder.wait_for(3)
            with pytest.raises(Exception):
                await nc.jetstream().publish("incidents.ack", json.dumps({"id": "jwt-1", "by": "x"}).encode(), timeout=2)
            await nc.close()
            return ready, errors, daemon.store.get("jwt-1").status

    with ConfiguredNats(tmp_path / "nats", operator.server_config()) as server:
        ready, errors, status = asyncio.run(scenario(server))
    assert ready["nats"] == {"ok": True}
    assert any('permissions violation for publish to "incidents.ack"' in e.lower() for e in errors) and status == "open"
