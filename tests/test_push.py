"""Push end to end: the real daemon and firebase-admin against an FCM double; the app's ack API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import pytest
from freezegun import freeze_time

from escalator.ack_tokens import AckTokens, InvalidToken
from escalator.daemon import Daemon
from tests.fcm_double import FcmDouble
from tests.harness import eventually, publish, settings_for
from tests.test_engine import ladders, nats_server, urgent  # noqa: F401 - fixtures


@contextlib.asynccontextmanager
async def stack(db_url, nats_server, tmp_path) -> AsyncIterator[tuple[FcmDouble, Daemon]]:
    """FCM double + the daemon with the real FCM push channel (voice and SMS not configured)."""
    async with FcmDouble() as fcm:
        settings = settings_for(
            db_url, nats_server.url, tmp_path / "data", window_scale=0.2, dry_run=False,
            fcm_credentials=str(fcm.service_account(tmp_path)), fcm_api_url=fcm.url,
        )
        settings.public_url = f"http://127.0.0.1:{settings.http_port}"
        daemon = Daemon(settings)
        task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 15)
        await eventually(lambda: daemon.ingest.js is not None)
        try:
            yield fcm, daemon
        finally:
            daemon.stop()
            await asyncio.wait_for(task, 30)


def post(url: str, token: str | None) -> tuple[int, dict]:
    request = urllib.request.Request(url, method="POST", data=b"")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_push_page_and_tap_to_acknowledge(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (fcm, daemon):
            await publish(nats_server.url, "incidents.urgent", urgent("p-1", "slow"))
            await eventually(lambda: fcm.messages)
            message = fcm.messages[0]
            data = message["data"]
            refused = [
                await asyncio.to_thread(post, data["ack_url"], None),
                await asyncio.to_thread(post, data["ack_url"], data["ack_token"] + "x"),
                await asyncio.to_thread(post, data["ack_url"].replace("p-1", "p-other"), data["ack_token"]),
            ]
            assert daemon.store.get("p-1").status == "open"
            accepted = await asyncio.to_thread(post, data["ack_url"], data["ack_token"])
            again = await asyncio.to_thread(post, data["ack_url"], data["ack_token"])
            return fcm, message, refused, accepted, again, daemon.store.timeline("p-1")[0]

    fcm, message, refused, accepted, again, timeline = asyncio.run(scenario())
    assert fcm.token_requests and fcm.token_requests[0]["assertion"]  # the service account's token_uri was used
    data = message["data"]
    assert message["token"] == "tok-a" and data["incident_id"] == "p-1" and data["summary"] == "No heat, 12 Elm St"
    assert data["ack_url"].endswith("/api/v1/incidents/p-1/ack") and data["pass_url"].endswith("/pass")
    assert message["android"]["priority"] == "high" and message["android"]["ttl"] in ("11s", "12s")  # what is left of the 12 s window
    assert message["apns"]["headers"]["apns-priority"] == "10"
    assert message["apns"]["payload"]["aps"]["interruption-level"] == "time-sensitive"
    assert [r[0] for r in refused] == [401, 401, 401]
    assert accepted == (200, {"incident": "p-1", "status": "acknowledged", "acked_by": "alice", "result": "acknowledged"})
    assert again == accepted  # a second tap by the one who has it: still theirs (a lost answer retried looks the same)
    ack = [e for e in timeline if e.event == "acknowledged"][0].data
    assert (ack["channel"], ack["contact"]) == ("push", "alice")


def test_push_pass(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (fcm, daemon):
            await publish(nats_server.url, "incidents.urgent", urgent("p-2", "slow"))
            await eventually(lambda: fcm.messages)
            data = fcm.messages[0]["data"]
            result = await asyncio.to_thread(post, data["pass_url"], data["ack_token"])
            late = await asyncio.to_thread(post, data["pass_url"], data["ack_token"])  # that leg is over now
            return result, late, daemon.store.timeline("p-2")[0]

    result, late, timeline = asyncio.run(scenario())
    assert result[0] == 200 and result[1]["result"] == "passed"
    assert late[1]["result"] == "unchanged"
    assert [e.data["leg"] for e in timeline if e.event == "leg_started"] == ["primary", "secondary"]


def test_unregistered_tokens_are_retired_and_skipped(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (fcm, daemon):
            fcm.unregistered.add("tok-a")
            await publish(nats_server.url, "incidents.urgent", urgent("p-3", "slow"))
            await eventually(lambda: [e for e in daemon.store.timeline("p-3")[0] if e.event == "page_failed" and e.data["channel"] == "push"])
            await publish(nats_server.url, "incidents.urgent", urgent("p-4", "slow"))
            await eventually(lambda: daemon.store.pages("p-4"))
            await asyncio.sleep(0.3)
            return daemon.store.timeline("p-3")[0], daemon.store.pages("p-4"), daemon.store.get("p-4")

    first, later_pages, later = asyncio.run(scenario())
    failed = [e.data for e in first if e.event == "page_failed" and e.data["channel"] == "push"]
    assert failed[0]["reason"] == "UNREGISTERED"
    assert "push" not in {p.channel for p in later_pages}  # skipped afterwards
    assert [t for leg in later.plan["legs"] for t in leg["targets"] if t[1] == "push"] == []


def test_ack_tokens_are_signed_and_expire() -> None:
    tokens = AckTokens("secret-key")
    with freeze_time("2026-11-22 03:00:00") as frozen:
        token = tokens.issue("inc-1", "alice", 1, 0)
        grant = tokens.verify(token, "inc-1")
        assert (grant.contact, grant.cycle, grant.leg_index) == ("alice", 1, 0)
        with pytest.raises(InvalidToken, match="another incident"):
            tokens.verify(token, "inc-2")
        with pytest.raises(InvalidToken, match="not valid"):
            AckTokens("other-key").verify(token, "inc-1")
        frozen.tick(24 * 3600 + 1)
        with pytest.raises(InvalidToken, match="expired"):
            tokens.verify(token, "inc-1")


def test_signing_key_is_generated_once_with_tight_permissions(tmp_path) -> None:
    from escalator.ack_tokens import load_or_create_key

    key = load_or_create_key(tmp_path / "data")
    assert load_or_create_key(tmp_path / "data") == key and len(key) >= 40
    assert oct((tmp_path / "data" / "push-signing.key").stat().st_mode & 0o777) == "0o600"


def test_tokens_with_odd_fields_are_invalid_not_a_crash() -> None:
    from itsdangerous import URLSafeTimedSerializer

    key = "k" * 40
    forge = URLSafeTimedSerializer(key, salt="escalator-push-ack")  # as if the key had leaked
    for fields in ({"i": "inc-1", "c": "alice", "y": "one", "l": 0}, {"i": "inc-1", "c": "alice", "y": 1, "l": 1.5},
                   {"i": "inc-1", "c": "alice", "y": 10**30, "l": 0}, {"i": "inc-1", "c": "alice", "y": True, "l": 0}):
        with pytest.raises(InvalidToken, match="not valid"):
            AckTokens(key).verify(forge.dumps(fields), "inc-1")


def test_rotated_keys_still_verify_older_tokens_and_sign_with_the_new_one() -> None:
    old, new = "o" * 40, "n" * 40
    before = AckTokens(old).issue("inc-1", "alice", 1, 0)
    rotated = AckTokens(new, previous=(old,))
    assert rotated.verify(before, "inc-1").contact == "alice"
    after = rotated.issue("inc-1", "bob", 1, 0)
    assert AckTokens(new).verify(after, "inc-1").contact == "bob"  # signed with the new key
    with pytest.raises(InvalidToken):
        AckTokens(new).verify(before, "inc-1")  # once the old key is dropped, its tokens stop working


@pytest.mark.parametrize("content, mode, words", [("k" * 64, 0o644, "may be read by others"), ("", 0o600, "holds 0 bytes"),
                                                   ("x", 0o600, "holds 1 bytes")])
def test_a_weak_or_exposed_key_file_stops_start_up(tmp_path, content, mode, words) -> None:
    from escalator.ack_tokens import load_or_create_key
    from escalator.errors import EscalatorError

    path = tmp_path / "push-signing.key"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(EscalatorError, match=words):
        load_or_create_key(tmp_path)


def test_our_fcm_request_is_the_one_firebase_admin_sends_and_its_answers_read_alike(tmp_path) -> None:
    """The push channel posts firebase-admin's own encoding of the message with aiohttp (see
    FcmChannel._post): the body and headers FCM receives, and how its answers are classified, are
    checked here against firebase-admin's own send_each_async, on the same FCM double."""
    from firebase_admin import messaging

    from escalator.channels import Page
    from escalator.channels.fcm import FcmChannel, _classify, make_app  # _classify: how firebase-admin's errors are read
    from escalator.ladders import Contact
    from escalator.resilience import CircuitBreaker

    async def scenario():
        async with FcmDouble() as fcm:
            app = make_app(str(fcm.service_account(tmp_path)), fcm.url, "fcm-equivalence")
            channel = FcmChannel(app, "https://pager.example.com", lambda *a: "ack-token", CircuitBreaker("push"))
            page = Page("inc-eq", "c1.l0.alice.push", "push", Contact.model_construct(id="alice", name="A", phone=None,
                        push_tokens=("tok-a",)), "No heat", 1, "primary", 60.0)
            message = channel._message(page, "tok-a", "ack-token")
            await channel._fresh_credential()
            ours = await channel._post(message)
            theirs = await messaging.send_each_async([message], app=app)
            fcm.unregistered.add("tok-a")
            our_gone = await channel._post(message)
            their_gone = (await messaging.send_each_async([message], app=app)).responses[0].exception
            fcm.unregistered.clear()
            fcm.status = 500
            our_down = await channel._post(message)
            their_down = (await messaging.send_each_async([message], app=app)).responses[0].exception
            await channel.close()
            return fcm, ours, theirs, (our_gone, their_gone), (our_down, their_down)

    fcm, ours, theirs, gone, down = asyncio.run(scenario())
    assert isinstance(ours, str) and ours.startswith("projects/escalator-test/messages/") and theirs.responses[0].success
    assert fcm.messages[0] == fcm.messages[1]  # the same body, byte for byte once parsed
    for name in ("X-GOOG-API-FORMAT-VERSION", "X-FIREBASE-CLIENT", "Authorization"):
        assert fcm.headers[0][name] == fcm.headers[1][name], name
    assert fcm.headers[0]["Content-Type"].startswith("application/json")
    for our, their in (gone, down):
        expected = _classify(their)
        assert (our.reason.split(":")[0], our.transient) == (expected.reason.split(":")[0], expected.transient), (our.reason, expected.reason)
