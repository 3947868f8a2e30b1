"""Voice and SMS end to end: the real daemon and `twilio` client against a Twilio double that calls back signed."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import pytest

from tests.recording import RecordingChannel
from escalator.daemon import Daemon
from tests.harness import eventually, publish, settings_for
from tests.test_engine import ladders, nats_server, urgent  # noqa: F401 - fixtures
from tests.twilio_double import TwilioDouble

ALICE, BOB, CAROL = "+14155550101", "+14155550102", "+14155550103"


@contextlib.asynccontextmanager
async def stack(db_url, nats_server, tmp_path, scale: float = 0.2) -> AsyncIterator[tuple[TwilioDouble, Daemon, RecordingChannel]]:
    """Twilio double + the daemon with real Twilio voice/SMS channels; push is a recording channel."""
    async with TwilioDouble() as double:
        settings = settings_for(
            db_url, nats_server.url, tmp_path / "data", window_scale=scale, dry_run=False,
            twilio_account_sid=double.account_sid, twilio_auth_token=double.auth_token, twilio_from="+14155550100",
            twilio_api_url=double.url,
        )
        settings.public_url = f"http://127.0.0.1:{settings.http_port}"
        push = RecordingChannel("push")
        daemon = Daemon(settings)
        daemon.channels["push"] = push
        task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 15)
        await eventually(lambda: daemon.ingest.js is not None)
        try:
            yield double, daemon, push
        finally:
            daemon.stop()
            await asyncio.wait_for(task, 30)


def status(daemon: Daemon, incident_id: str) -> str | None:
    row = daemon.store.get(incident_id)
    return row.status if row else None


def events(daemon: Daemon, incident_id: str) -> list:
    return daemon.store.timeline(incident_id)[0]


def sms_url(daemon: Daemon) -> str:
    return daemon.settings.public_url + "/twilio/sms"


def code_in(body: str) -> str:
    return re.search(r"Reply ACK (\d+) to take it", body).group(1)


def test_key_1_acknowledges_and_is_confirmed_aloud(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            double.answer[ALICE] = "1"
            await publish(nats_server.url, "incidents.urgent", urgent("v-1", "slow"))
            await eventually(lambda: status(daemon, "v-1") == "acknowledged")
            await eventually(lambda: double.calls and double.calls[0].statuses == ["completed"])
            return double, events(daemon, "v-1")

    double, timeline = asyncio.run(scenario())
    call = double.calls[0]
    assert call.form["Url"].startswith("http://127.0.0.1:") and "/twilio/voice?incident=v-1" in call.form["Url"]
    assert "/twilio/status?" in call.form["StatusCallback"] and call.form["MachineDetection"] == "Enable"
    assert any("No heat, 12 Elm St" in s and "Press 1 to take" in s for s in call.said)
    assert any(s.startswith("You have it.") for s in call.said)
    ack = [e for e in timeline if e.event == "acknowledged"][0].data
    assert (ack["by"], ack["channel"], ack["contact"]) == ("alice", "voice", "alice")
    text = double.messages[0]
    assert text.to == ALICE and re.fullmatch(r"No heat, 12 Elm St Reply ACK \d{4} to take it, PASS \d{4} to pass\.", text.body)


def test_key_2_passes_at_once(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            double.answer[ALICE] = "2"
            await publish(nats_server.url, "incidents.urgent", urgent("v-2", "slow"))
            await eventually(lambda: any(c.to == BOB for c in double.calls), timeout=4)  # the window is 12 s
            return double, events(daemon, "v-2")

    double, timeline = asyncio.run(scenario())
    passed = [e for e in timeline if e.event == "passed"][0].data
    assert (passed["by"], passed["channel"], passed["leg"]) == ("alice", "voice", "primary")
    assert any("Passed on" in s for s in double.calls[0].said)


def test_voicemail_never_acknowledges(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path, scale=0.05) as (double, daemon, push):  # 3 s windows
            double.answer[ALICE] = "voicemail"
            await publish(nats_server.url, "incidents.urgent", urgent("v-3", "slow"))
            await eventually(lambda: any(c.to == BOB for c in double.calls), timeout=10)
            return double, daemon.store.timeline("v-3"), status(daemon, "v-3")

    double, (timeline, notes), state = asyncio.run(scenario())
    assert state == "open" and "acknowledged" not in [e.event for e in timeline]
    assert "leg_timed_out" in [e.event for e in timeline]
    assert any("reached voicemail" in n.note for n in notes)
    assert any("check your text messages" in s for s in double.calls[0].said)


def test_sms_ack_code_acknowledges_but_not_from_another_number(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            await publish(nats_server.url, "incidents.urgent", urgent("s-1", "slow"))
            await eventually(lambda: double.messages)
            await eventually(lambda: double.calls and double.calls[0].statuses == ["completed"])  # alice let it ring out
            code = code_in(double.messages[0].body)
            wrong_sender = await double.post(sms_url(daemon), {"From": BOB, "Body": f"ACK {code}"})
            assert status(daemon, "s-1") == "open"
            reply = await double.post(sms_url(daemon), {"From": ALICE, "Body": f" ack {code} "})
            again = await double.post(sms_url(daemon), {"From": ALICE, "Body": f"ACK {code}"})
            return wrong_sender, reply, again, events(daemon, "s-1"), status(daemon, "s-1"), double.calls[0]

    wrong_sender, reply, again, timeline, state, unanswered = asyncio.run(scenario())
    # nobody pressed a key on alice's call: the prompt was said 3 times, then the call ended
    assert sum("Press 1 to take" in said for said in unanswered.said) == 3
    assert unanswered.said[-1] == "No key was pressed. Goodbye."
    assert wrong_sender[0] == 200 and "No open page has code" in wrong_sender[1]
    assert reply[0] == 200 and "<Message>You have incident s-1: No heat, 12 Elm St. Thank you.</Message>" in reply[1]
    assert state == "acknowledged" and "You have incident s-1" in again[1]  # already hers: the same answer
    ack = [e for e in timeline if e.event == "acknowledged"][0].data
    assert (ack["channel"], ack["contact"]) == ("sms", "alice")


def test_bare_ack_and_help(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            none_yet = await double.post(sms_url(daemon), {"From": ALICE, "Body": "1"})
            await publish(nats_server.url, "incidents.urgent", urgent("s-2", "slow"))
            await publish(nats_server.url, "incidents.urgent", urgent("s-3", "slow"))
            await eventually(lambda: len(double.messages) >= 2)
            await eventually(lambda: len(daemon.codes.open_pages(ALICE)) == 2)
            several = await double.post(sms_url(daemon), {"From": ALICE, "Body": "ACK"})
            help_ = await double.post(sms_url(daemon), {"From": ALICE, "Body": "on my way"})
            await publish(nats_server.url, "incidents.resolve", {"id": "s-3"})
            await eventually(lambda: status(daemon, "s-3") == "resolved")
            one = await double.post(sms_url(daemon), {"From": ALICE, "Body": "1"})
            return none_yet, several, help_, one, status(daemon, "s-2")

    none_yet, several, help_, one, state = asyncio.run(scenario())
    assert "You have no open pages." in none_yet[1]
    assert "You have 2 open pages" in several[1]
    assert "Reply ACK &lt;code&gt; to take an incident" in help_[1]
    assert "You have incident s-2" in one[1] and state == "acknowledged"


@pytest.mark.parametrize("path", ["/twilio/sms", "/twilio/gather", "/twilio/voice", "/twilio/status"])
def test_unsigned_or_missigned_callbacks_get_403_and_change_nothing(ladders, db_url, nats_server, tmp_path, path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            await publish(nats_server.url, "incidents.urgent", urgent("f-1", "slow"))
            await eventually(lambda: double.messages)
            code = code_in(double.messages[0].body)
            base = daemon.settings.public_url
            url = f"{base}{path}?incident=f-1&key=c1.l0.alice.voice&channel=voice&attempt=1"
            params = {"From": ALICE, "Body": f"ACK {code}", "Digits": "1", "CallStatus": "failed"}
            before = len(events(daemon, "f-1"))
            results = [
                await double.post(url, params, signature=None),
                await double.post(url, params, signature="bm90LWEtc2lnbmF0dXJl"),
                # signed for another host (what trusting the Host header would accept)
                await double.post(url, params, signature=double.sign(url.replace("127.0.0.1", "evil.example"), params)),
                # signed, but for other parameters than those sent
                await double.post(url, params, signature=double.sign(url, {**params, "Digits": "2"})),
            ]
            await asyncio.sleep(0.3)
            return results, status(daemon, "f-1"), before, len(events(daemon, "f-1")), daemon.store.timeline("f-1")[1]

    results, state, before, after, notes = asyncio.run(scenario())
    assert [r[0] for r in results] == [403, 403, 403, 403]
    assert state == "open" and after >= before
    assert not [n for n in notes if "sms" in n.note and "ack" in n.note]


def test_wrong_codes_replace_the_numbers_codes_and_never_lock_out_the_person(ladders, db_url, nats_server, tmp_path) -> None:
    """Lock the code, not the number: five wrong codes get the number's open pages new codes, sent
    in the reply (which Twilio delivers to the number itself, whoever claimed to be it)."""

    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            await publish(nats_server.url, "incidents.urgent", urgent("r-1", "slow"))
            await eventually(lambda: double.messages)
            code = code_in(double.messages[0].body)
            wrong = f"{(int(code) + 1) % 10000:04d}"
            replies = [await double.post(sms_url(daemon), {"From": ALICE, "Body": f"ACK {wrong}"}) for _ in range(5)]
            old = await double.post(sms_url(daemon), {"From": ALICE, "Body": f"ACK {code}"})
            new_code = re.search(r"Reply ACK (\d{6}) for incident r-1", replies[-1][1]).group(1)
            state_before = status(daemon, "r-1")
            taken = await double.post(sms_url(daemon), {"From": ALICE, "Body": f"ACK {new_code}"})
            return replies, old, taken, state_before, status(daemon, "r-1"), daemon.store.timeline("r-1")[1]

    replies, old, taken, before, after, notes = asyncio.run(scenario())
    assert all("No open page has code" in r[1] for r in replies[:4])
    assert "Too many wrong codes from this number, so its codes were changed." in replies[4][1]
    assert "That code was changed after too many wrong codes. Reply ACK" in old[1] and before == "open"  # the old code is locked
    assert "You have incident r-1" in taken[1] and after == "acknowledged"  # the person is not
    assert any("replaced after 5 wrong codes" in n.note for n in notes)


def test_a_replayed_text_or_key_press_changes_nothing(ladders, db_url, nats_server, tmp_path) -> None:
    """A validly signed bare ACK replayed later (same MessageSid) must not take the incident open
    then; a key 2 replayed (same call and prompt) must not pass a second leg."""

    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            await publish(nats_server.url, "incidents.urgent", urgent("rp-1", "slow"))
            await eventually(lambda: daemon.codes.open_pages(ALICE))
            original = {"MessageSid": "SM" + "7" * 32, "From": ALICE, "Body": "ACK"}
            first = await double.post(sms_url(daemon), original)
            await eventually(lambda: status(daemon, "rp-1") == "acknowledged")
            await publish(nats_server.url, "incidents.urgent", urgent("rp-2", "slow"))
            await eventually(lambda: daemon.codes.open_pages(ALICE))
            replayed = await double.post(sms_url(daemon), original)
            await asyncio.sleep(0.3)
            sms_state = status(daemon, "rp-2")
            base = daemon.settings.public_url
            gather = f"{base}/twilio/gather?incident=rp-2&key=c1.l0.alice.voice&attempt=1"
            press = {"CallSid": "CA" + "5" * 32, "Digits": "2"}
            passed = await double.post(gather, press)
            await eventually(lambda: [e.event for e in events(daemon, "rp-2")].count("leg_started") == 2)
            again = await double.post(gather, press)
            await asyncio.sleep(0.3)
            return first, replayed, sms_state, passed, again, events(daemon, "rp-2")

    first, replayed, sms_state, passed, again, timeline = asyncio.run(scenario())
    assert "You have incident rp-1" in first[1]
    assert replayed[0] == 200 and "<Message>" not in replayed[1] and sms_state == "open"
    assert "Passed on" in passed[1] and "already received" in again[1]
    names = [e.event for e in timeline]
    assert names.count("passed") == 1 and names.count("leg_started") == 2


def test_twilio_500_opens_voice_and_sms_breakers_while_push_pages(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            double.api_status = 500
            for i in range(3):
                await publish(nats_server.url, "incidents.urgent", urgent(f"b-{i}", "slow"))
            await push.wait_for(3)
            breakers = {n: daemon.channels[n].breaker.state for n in ("voice", "sms")}
            await eventually(lambda: all(daemon.channels[n].breaker.state == "open" for n in ("voice", "sms")), timeout=10)
            metrics = daemon.metrics.registry.get_sample_value
            gauges = {n: metrics("escalator_breaker_state", {"channel": n}) for n in ("voice", "sms", "push")}
            await publish(nats_server.url, "incidents.urgent", urgent("b-late", "slow"))
            await eventually(lambda: len([e for e in events(daemon, "b-late") if e.event == "page_failed"]) == 2)
            return double.requests, gauges, events(daemon, "b-late"), push.pages

    requests, gauges, late, pushed = asyncio.run(scenario())
    assert gauges == {"voice": 2.0, "sms": 2.0, "push": 0.0}
    failed = [e.data for e in late if e.event == "page_failed"]
    assert {f["channel"] for f in failed} == {"voice", "sms"} and all(f["reason"].startswith("breaker open") for f in failed)
    assert {p.page.incident_id for p in pushed} >= {"b-0", "b-1", "b-2", "b-late"}


def test_every_channel_failing_moves_to_the_next_leg_well_before_the_window(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            double.api_status = 400  # Twilio rejects: permanent, not retried
            push.fail["alice"] = "UNREGISTERED"
            await publish(nats_server.url, "incidents.urgent", urgent("u-1", "slow"))
            await eventually(lambda: [e.data.get("leg") for e in events(daemon, "u-1") if e.event == "leg_started"] == ["primary", "secondary"], timeout=4)
            return events(daemon, "u-1")

    timeline = asyncio.run(scenario())
    started = [e for e in timeline if e.event == "leg_started"]
    assert (started[1].at - started[0].at).total_seconds() < 3  # the window is 12 s
    reasons = [e.data["reason"] for e in timeline if e.event == "page_failed"][:3]
    assert any("rejected: HTTP 400" in r for r in reasons) and "UNREGISTERED" in reasons


def test_a_hung_provider_does_not_delay_the_next_leg(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):  # 1 s windows on "night"
            double.hang = True
            await publish(nats_server.url, "incidents.urgent", urgent("h-1", "night"))
            await eventually(lambda: len([e for e in events(daemon, "h-1") if e.event == "leg_started"]) == 3, timeout=6)
            return events(daemon, "h-1")

    timeline = asyncio.run(scenario())
    started = [e for e in timeline if e.event in ("leg_started",)]
    gaps = [(b.at - a.at).total_seconds() for a, b in zip(started, started[1:])]
    assert all(1.0 <= g < 2.5 for g in gaps), gaps  # each leg ends at its 1 s window: the hang (seconds) holds none up


def test_delivery_failures_feed_the_unreachable_rule(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            double.answer[ALICE] = "no-answer"
            double.text_status[ALICE] = "undelivered"
            push.fail["alice"] = "UNREGISTERED"
            await publish(nats_server.url, "incidents.urgent", urgent("d-1", "slow"))
            await eventually(lambda: any(c.to == BOB for c in double.calls), timeout=4)
            return daemon.store.timeline("d-1")

    timeline, notes = asyncio.run(scenario())
    reasons = sorted(e.data["reason"] for e in timeline if e.event == "page_failed")
    assert reasons == ["UNREGISTERED", "sms undelivered", "voice no-answer"]
    assert [e for e in timeline if e.event == "passed"][0].data["reason"].startswith("unreachable")


def test_key_press_after_someone_else_took_it_is_answered_with_who(ladders, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            await publish(nats_server.url, "incidents.urgent", urgent("t-1", "slow"))
            await eventually(lambda: double.calls and double.calls[0].statuses)
            await publish(nats_server.url, "incidents.ack", {"id": "t-1", "by": "dispatcher"})
            await eventually(lambda: status(daemon, "t-1") == "acknowledged")
            url = f"{daemon.settings.public_url}/twilio/gather?incident=t-1&key=c1.l0.alice.voice&attempt=1"
            return await double.post(url, {"CallSid": double.calls[0].sid, "Digits": "1"}), daemon.store.timeline("t-1")

    (code, xml), (timeline, notes) = asyncio.run(scenario())
    assert code == 200 and "Incident t-1 was already taken by dispatcher" in xml and "<Hangup" in xml
    assert [e.data["by"] for e in timeline if e.event == "acknowledged"] == ["dispatcher"]
    assert any("acknowledgement by alice by key press changed nothing" in n.note for n in notes)


def test_contact_test_reports_delivery(ladders, db_url, nats_server, tmp_path) -> None:
    from typer.testing import CliRunner

    from escalator.cli import app

    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            s = daemon.settings
            env = {
                "ESCALATOR_DATABASE_URL": db_url, "ESCALATOR_DATA_DIR": str(tmp_path / "data"), "ESCALATOR_DRY_RUN": "false",
                "ESCALATOR_TWILIO_ACCOUNT_SID": double.account_sid, "ESCALATOR_TWILIO_AUTH_TOKEN": double.auth_token,
                "ESCALATOR_TWILIO_FROM": "+14155550100", "ESCALATOR_TWILIO_API_URL": double.url, "ESCALATOR_PUBLIC_URL": s.public_url,
            }
            double.answer[BOB] = "silent"
            runner = CliRunner()
            ok = await asyncio.to_thread(runner.invoke, app, ["contact", "test", "bob", "--wait", "10"], env=env)
            double.text_status[CAROL] = "undelivered"
            bad = await asyncio.to_thread(runner.invoke, app, ["contact", "test", "carol", "--channel", "sms", "--wait", "5"], env=env)
            refused = await asyncio.to_thread(runner.invoke, app, ["contact", "test", "bob", "--channel", "push"], env=env)
            return ok, bad, refused, double

    ok, bad, refused, double = asyncio.run(scenario())
    assert ok.exit_code == 0, ok.output
    assert "voice: completed" in ok.stdout and "sms: delivered" in ok.stdout
    assert any("This is a test call from escalator" in s for s in double.calls[0].said)
    assert double.messages[0].body.startswith("Test page from escalator")
    assert bad.exit_code == 1 and "sms: undelivered" in bad.stdout
    assert refused.exit_code == 2 and "has no push tokens for push" in refused.stderr


def test_pages_stopped_because_someone_took_the_incident_do_not_count_against_twilio(ladders, db_url, nats_server, tmp_path) -> None:
    """A busy acknowledgement at a leg with several contacts stops six Twilio requests in flight: the
    breakers must stay closed (before, each stop counted as a provider failure and five opened it)."""
    from escalator import clock, ladder_files
    from tests.conftest import write

    crowd = "ladder: crowd\nack_timeout: 60s\nlegs:\n  - {name: all, contacts: [alice, bob, carol], channels: [voice, sms]}\n"
    ladders.apply(ladder_files.load([write(tmp_path / "crowd.yaml", crowd)]), "test", clock.now())

    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            double.hang = True  # every request waits: all six are in flight when the ack comes
            await publish(nats_server.url, "incidents.urgent", urgent("busy-1", "crowd"))
            await eventually(lambda: double.requests >= 6)
            await publish(nats_server.url, "incidents.ack", {"id": "busy-1", "by": "dispatch"})
            await eventually(lambda: len([e for e in events(daemon, "busy-1") if e.event == "page_failed"]) == 6)
            double.hang = False
            breakers = {n: (daemon.channels[n].breaker.state, daemon.channels[n].breaker.failures) for n in ("voice", "sms")}
            return breakers, [e.data["reason"] for e in events(daemon, "busy-1") if e.event == "page_failed"]

    breakers, reasons = asyncio.run(scenario())
    assert breakers == {"voice": ("closed", 0), "sms": ("closed", 0)}
    assert set(reasons) == {"stopped: the incident was taken or resolved"}


def test_a_taken_incident_cancels_the_other_contacts_queued_and_ringing_calls(ladders, db_url, nats_server, tmp_path) -> None:
    """Twilio places 1 call a second (the account's CPS): three calls of one leg wait in its queue or
    ring. Somebody takes the incident: every call still queued or ringing is cancelled at Twilio."""
    from escalator import clock, ladder_files
    from tests.conftest import write

    crowd = "ladder: crowd\nack_timeout: 60s\nlegs:\n  - {name: all, contacts: [alice, bob, carol], channels: [voice, sms]}\n"
    ladders.apply(ladder_files.load([write(tmp_path / "crowd.yaml", crowd)]), "test", clock.now())

    async def scenario():
        async with stack(db_url, nats_server, tmp_path, scale=1.0) as (double, daemon, push):
            double.cps, double.ring_s = 1.0, 30.0  # queued one by one, then ringing for 30 s
            await publish(nats_server.url, "incidents.urgent", urgent("cc-1", "crowd"))
            await eventually(lambda: len(double.calls) == 3)
            await eventually(lambda: len([e for e in events(daemon, "cc-1") if e.event == "page_sent"]) == 6)
            states_before = sorted(c.state for c in double.calls)
            await publish(nats_server.url, "incidents.ack", {"id": "cc-1", "by": "dispatch"})
            await eventually(lambda: len(double.cancels) == 3, timeout=10)
            await asyncio.sleep(1.5)  # a call left in Twilio's queue would be placed by now
            await eventually(lambda: sum("canceled while queued" in n.note for n in daemon.store.timeline("cc-1")[1]) == 3)
            return states_before, double.calls, daemon.store.timeline("cc-1")

    states_before, calls, (timeline, notes) = asyncio.run(scenario())
    assert "queued" in states_before  # Twilio was holding some of them back (1 call a second)
    assert [c.state for c in calls] == ["canceled"] * 3 and not any(c.said for c in calls)  # none rang on or was answered
    # Twilio's `canceled` callbacks are our own doing: noted, never a failed page
    assert not [e for e in timeline if e.event == "page_failed"], [e.data for e in timeline if e.event == "page_failed"]


def test_a_page_whose_leg_ends_while_it_waits_in_escalator_is_abandoned(ladders, db_url, nats_server, tmp_path) -> None:
    """One request to Twilio at a time, and that one hangs: the pages queued behind it are not sent
    after their leg ended; they are recorded as abandoned, and only the hung request counts against
    Twilio (nothing that merely waited in escalator does)."""

    async def scenario():
        async with stack(db_url, nats_server, tmp_path, scale=0.4) as (double, daemon, push):  # 2 s windows on "night"
            daemon.channels["voice"].queue.limit = 1  # the queue voice and SMS share
            double.hang = True
            await publish(nats_server.url, "incidents.urgent", urgent("ab-1", "night"))
            await eventually(lambda: len([e for e in events(daemon, "ab-1") if e.event == "page_failed"]) >= 2, timeout=10)
            counted = daemon.channels["voice"].breaker.failures + daemon.channels["sms"].breaker.failures
            double.hang = False
            failed = [e.data for e in events(daemon, "ab-1") if e.event == "page_failed" and e.data["leg"] == "primary"]
            await asyncio.sleep(0.3)
            texts_to_alice = [m for m in double.messages if m.to == ALICE]
            return failed, texts_to_alice, counted

    failed, texts_to_alice, counted = asyncio.run(scenario())
    reasons = {f["channel"]: f["reason"] for f in failed}
    assert reasons["sms"].startswith("abandoned: its window ended before it could be sent")
    assert "no answer from the provider" in reasons["voice"]
    assert texts_to_alice == [] and counted == 1  # the SMS never went out, and only the hung call counted
