"""Fault injection: hypothesis throws arbitrary requests at the real daemon's webhooks and API.
Unsigned or wrongly signed requests change nothing; no request, signed or not, gets a 5xx."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from escalator.store.incidents import IncidentStore
from tests.harness import DaemonProcess, eventually, free_port, publish
from tests.test_engine import ladders, nats_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

TOKEN = "fuzz-auth-token"
ALICE = "+14155550101"
TWILIO_PATHS = ["/twilio/sms", "/twilio/voice", "/twilio/gather", "/twilio/status", "/twilio/test-call"]
API_PATHS = ["/api/v1/incidents/inc-fuzz/ack", "/api/v1/incidents/inc-fuzz/pass"]

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
forms = st.dictionaries(
    st.sampled_from(["From", "To", "Body", "Digits", "CallSid", "MessageSid", "CallStatus", "MessageStatus", "AnsweredBy",
                     "ErrorCode", "SpeechResult"]) | text,
    st.sampled_from([ALICE, "1", "2", "ACK", "ACK 1234", "PASS 1234", "completed", "failed", "human", ""]) | text,
    max_size=6,
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)  # what a header can carry
queries = st.dictionaries(
    st.sampled_from(["incident", "key", "channel", "attempt", "action"]) | text,
    st.sampled_from(["inc-fuzz", "c1.l0.alice.voice", "c1.l0.alice.sms", "voice", "sms", "0", "1", "-1", "999999"]) | text,
    max_size=4,
)


def unchanged(store: IncidentStore) -> tuple:
    events = [e.event for e in store.timeline("inc-fuzz")[0]]
    return store.get("inc-fuzz").status, events.count("acknowledged"), events.count("passed"), events.count("leg_started")


def test_fuzzed_webhooks_never_5xx_and_change_nothing_unsigned(ladders, db_url, nats_server, tmp_path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "ESCALATOR_DATABASE_URL": db_url, "ESCALATOR_NATS_URL": nats_server.url, "ESCALATOR_HTTP_PORT": str(port),
        "ESCALATOR_PUBLIC_URL": base, "ESCALATOR_DATA_DIR": str(tmp_path / "data"), "ESCALATOR_DRY_RUN": "true",
        "ESCALATOR_TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "ESCALATOR_TWILIO_AUTH_TOKEN": TOKEN, "ESCALATOR_TWILIO_FROM": "+14155550100",
        "ESCALATOR_PUSH_SIGNING_KEY": "fuzz-push-key-" + "f" * 32,
    }
    daemon = DaemonProcess(env, tmp_path / "daemon.log")
    daemon.start()
    store = IncidentStore(ladders.engine)
    validator = RequestValidator(TOKEN)
    statuses: dict[str, int] = {}
    try:
        asyncio.run(publish(nats_server.url, "incidents.urgent", {"id": "inc-fuzz", "ladder": "slow", "summary": "x"}, "inc-fuzz"))
        asyncio.run(eventually(lambda: store.get("inc-fuzz") is not None and len(store.pages("inc-fuzz")) == 3))
        before = unchanged(store)
        started = time.monotonic()
        client = httpx.Client(timeout=10)

        def send(path: str, query: dict, form: dict, signature: str | None, raw: bytes | None = None) -> int:
            url = base + path + ("?" + urlencode(query) if query else "")
            headers = {} if signature is None else {"X-Twilio-Signature": signature}
            if raw is not None:
                response = client.post(url, content=raw, headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
            else:
                response = client.post(url, data=form, headers=headers)
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
            assert response.status_code < 500, (path, query, form, response.text[:300])
            return response.status_code

        @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            path=st.sampled_from(TWILIO_PATHS + API_PATHS) | text.map(lambda t: "/twilio/" + t),
            query=queries, form=forms,
            signature=st.none() | header_text | st.just("forged"),
            wrong_url=st.booleans(), raw=st.none() | st.binary(max_size=200),
            bearer=st.none() | header_text,
        )
        def unsigned(path, query, form, signature, wrong_url, raw, bearer):
            if path.startswith("/api/"):
                headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
                try:
                    response = client.post(base + path, content=raw or b"", headers=headers)
                except (httpx.InvalidURL, httpx.LocalProtocolError):  # not sendable over HTTP at all
                    return
                statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
                assert response.status_code < 500 and response.status_code != 200, response.text[:300]
                return
            if signature is None and wrong_url:  # a real signature, but for another URL or other parameters
                signature = validator.compute_signature(base + "/twilio/elsewhere", form)
            try:
                code = send(path, query, form, signature, raw)
            except (httpx.InvalidURL, httpx.LocalProtocolError):  # not sendable over HTTP at all
                return
            assert code in (400, 403, 404, 405, 413), code

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            path=st.sampled_from(TWILIO_PATHS), fields=st.integers(150, 40_000), width=st.integers(1, 12),
            repeated=st.booleans(), signed_too=st.booleans(),
        )
        @example(path="/twilio/sms", fields=20_000, width=1, repeated=False, signed_too=False)  # froze the loop for 11.9 s
        @example(path="/twilio/sms", fields=201, width=1, repeated=True, signed_too=True)
        @example(path="/twilio/gather", fields=200, width=2, repeated=False, signed_too=True)
        def shaped(path, fields, width, repeated, signed_too):
            """The shapes of SPEC §5's limits: many fields, repeated names, bodies around 64 KiB."""
            pairs = [("f" if repeated else f"f{i}", "v" * width) for i in range(fields)]
            body = urlencode(pairs).encode()
            url = base + path
            signature = validator.compute_signature(url, dict(pairs)) if signed_too else None
            started = time.monotonic()
            code = send(path, {}, {}, signature, body)
            assert time.monotonic() - started < 2.0, (fields, len(body))
            if len(body) > 64 * 1024:
                assert code == 413, (code, len(body))
            elif fields > 200:
                assert code == 400, (code, fields)
            elif not signed_too:
                assert code == 403, code

        @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(path=st.sampled_from(TWILIO_PATHS), query=queries, form=forms)
        @example(path="/twilio/voice", query={"incident": "\x00"}, form={})  # once a 500 on PostgreSQL
        @example(path="/twilio/sms", query={}, form={"From": "+1415\x00", "Body": "ACK 1234"})
        def signed(path, query, form):
            url = base + path + ("?" + urlencode(query) if query else "")
            send(path, query, form, validator.compute_signature(url, form))

        unsigned()
        shaped()
        after_unsigned = unchanged(store)
        signed()
        took = time.monotonic() - started
        client.close()
    finally:
        assert daemon.terminate() == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    assert after_unsigned == before  # nothing without a valid signature
    assert took < 60  # still inside alice's window: no leg change is expected from time passing
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log
    print(f"\nwebhook fuzzing: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}, 0 server errors")
