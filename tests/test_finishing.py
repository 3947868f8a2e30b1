"""Finishing the job (SPEC §11) end to end: the real daemon, the real `twilio` client against the Twilio
double (signed callbacks, Twilio's error codes), a real nats-server, SQLite and PostgreSQL.

Connecting the acker to the caller, acknowledgements that expire, and opted-out numbers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from escalator import clock, ladder_files
from escalator.store import opt_outs
from escalator.store.catalog import Catalog
from escalator.store import migrate
from escalator.store.db import make_engine
from escalator.store.incidents import NewIncident
from tests.conftest import write
from tests.harness import eventually, publish, running_daemon, settings_for
from tests.recording import RecordingChannel
from tests.test_engine import nats_server  # noqa: F401 - fixture
from tests.test_twilio import ALICE, BOB, events, sms_url, stack, status

OUR_NUMBER, CALLER = "+14155550100", "+13125550199"
FILES = """\
contacts:
  - {id: alice, name: Alice, phone: "+14155550101", push_tokens: ["tok-a"]}
  - {id: bob, name: Bob, phone: "+14155550102"}
---
ladder: slow
ack_timeout: 60s
legs:
  - {name: primary, contacts: [alice]}
  - {name: secondary, contacts: [bob]}
---
ladder: private
ack_timeout: 60s
connect_caller: false
legs:
  - {name: primary, contacts: [alice]}
---
ladder: expiring
ack_timeout: 1000s
ack_expires: 5m
legs:
  - {name: primary, contacts: [alice]}
  - {name: secondary, contacts: [bob]}
---
ladder: texts
ack_timeout: 60s
legs:
  - {name: primary, contacts: [alice], channels: [sms]}
  - {name: secondary, contacts: [bob], channels: [sms]}
"""


@pytest.fixture
def finishing(catalog: Catalog, tmp_path: Path) -> Catalog:
    catalog.apply(ladder_files.load([write(tmp_path / "finishing.yaml", FILES)]), "test", clock.now())
    return catalog


def urgent(incident_id: str, ladder: str, **extra) -> dict:
    return {"id": incident_id, "ladder": ladder, "summary": "No heat, 12 Elm St", **extra}


def names(daemon, incident_id: str) -> list[str]:
    return [e.event for e in events(daemon, incident_id)]


def texts_to(double, number: str) -> list[str]:
    return [m.body for m in double.messages if m.to == number]


# -- connect the technician to the caller --------------------------------------------------------


def test_key_1_then_key_1_dials_the_caller_from_our_number(finishing, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            double.answer[ALICE] = "11"
            await publish(nats_server.url, "incidents.urgent", urgent("c-1", "slow", caller=CALLER))
            await eventually(lambda: double.calls and double.calls[0].statuses == ["completed"])
            await eventually(lambda: "caller_connected" in names(daemon, "c-1"))
            calls, texts = len(double.calls), len(double.messages)
            await asyncio.sleep(1)
            return double, events(daemon, "c-1"), status(daemon, "c-1"), calls, texts

    double, timeline, state, calls, texts = asyncio.run(scenario())
    call = double.calls[0]
    assert call.dialed == [(OUR_NUMBER, [CALLER])]  # <Dial callerId=ESCALATOR_TWILIO_FROM><Number>caller</Number>
    assert any("Press 1 to be connected to the caller now" in s for s in call.said)
    assert any(s.startswith("Connecting you to the caller") for s in call.said)
    connected = [e.data for e in timeline if e.event == "caller_connected"]
    assert connected == [{"by": "alice", "contact": "alice", "channel": "voice"}]
    assert [e.event for e in timeline].index("acknowledged") < [e.event for e in timeline].index("caller_connected")
    # nothing more is paged: one call and one text, as when alice's leg started
    assert state == "acknowledged" and (calls, texts) == (len(double.calls), len(double.messages)) == (1, 1)


def test_an_sms_acknowledgement_carries_the_callers_number_and_push_data_carries_it(finishing, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            await publish(nats_server.url, "incidents.urgent", urgent("c-2", "slow", caller=CALLER))
            await publish(nats_server.url, "incidents.urgent", urgent("c-3", "private", caller=CALLER))
            await eventually(lambda: len(texts_to(double, ALICE)) == 2 and len(push.pages) == 2)
            replies = []
            for body in texts_to(double, ALICE):
                code = re.search(r"Reply ACK (\d+)", body).group(1)
                replies.append((await double.text_in(sms_url(daemon), ALICE, f"ACK {code}"))[1])
            return replies, {r.page.incident_id: r.page.caller for r in push.pages}

    replies, push_callers = asyncio.run(scenario())
    by_incident = {re.search(r"incident (c-\d)", r).group(1): r for r in replies}
    assert f"Caller: {CALLER}." in by_incident["c-2"]
    assert CALLER not in by_incident["c-3"]  # connect_caller: false keeps the number to the incident
    assert push_callers == {"c-2": CALLER, "c-3": None}


def test_without_a_caller_or_with_connect_caller_off_key_1_is_confirmed_without_an_offer(finishing, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            double.answer[ALICE] = "11"
            await publish(nats_server.url, "incidents.urgent", urgent("c-4", "private", caller=CALLER))
            await publish(nats_server.url, "incidents.urgent", urgent("c-5", "slow"))
            await eventually(lambda: len(double.calls) == 2 and all(c.statuses == ["completed"] for c in double.calls))
            return double.calls, names(daemon, "c-4") + names(daemon, "c-5")

    calls, timeline = asyncio.run(scenario())
    assert all(c.dialed == [] and not any("connected to the caller" in s for s in c.said) for c in calls)
    assert "caller_connected" not in timeline and timeline.count("acknowledged") == 2


# -- acknowledgements that expire ----------------------------------------------------------------


def test_an_expiring_acknowledgement_reminds_the_acker_renews_and_then_expires(finishing, db_url, nats_server, tmp_path) -> None:
    """ack_expires 5m and windows of 1000 s, at window scale 0.01: 3 s to confirm, 10 s to answer a reminder."""

    async def scenario():
        async with stack(db_url, nats_server, tmp_path, scale=0.01) as (double, daemon, push):
            double.answer[ALICE] = "1"
            await publish(nats_server.url, "incidents.urgent", urgent("e-1", "expiring"))
            await eventually(lambda: status(daemon, "e-1") == "acknowledged")
            # 3 s later: a reminder call to alice, who presses 1 again
            await eventually(lambda: "ack_renewed" in names(daemon, "e-1"), timeout=20)
            reminder_call = next(c for c in double.calls if "/twilio/voice" in c.form["Url"] and "key=r" in c.form["Url"])
            double.answer[ALICE] = "silent"
            # the next reminder: she confirms by SMS with the reminder's fresh code
            await eventually(lambda: any(b.startswith("Still on it?") for b in texts_to(double, ALICE)[2:]), timeout=20)
            reminder = [b for b in texts_to(double, ALICE) if b.startswith("Still on it?")][-1]
            code = re.search(r"Reply ACK (\d+)", reminder).group(1)
            confirmed = await double.text_in(sms_url(daemon), ALICE, f"ACK {code}")
            renewals = names(daemon, "e-1").count("ack_renewed")
            # the one after that goes unanswered: after the first leg's window the incident is open again
            await eventually(lambda: "ack_expired" in names(daemon, "e-1"), timeout=40)
            await eventually(lambda: status(daemon, "e-1") in ("open", "acknowledged"))
            leg_pages = [b for b in texts_to(double, ALICE) if "to take it" in b]
            await eventually(lambda: len([b for b in texts_to(double, ALICE) if "to take it" in b]) == 2)
            fresh = [b for b in texts_to(double, ALICE) if "to take it" in b][-1]
            fresh_code = re.search(r"Reply ACK (\d+)", fresh).group(1)
            again = await double.text_in(sms_url(daemon), ALICE, f"ACK {fresh_code}")
            await eventually(lambda: names(daemon, "e-1").count("acknowledged") == 2)
            return (double, events(daemon, "e-1"), reminder_call, confirmed, renewals, again, len(leg_pages),
                    [r.page for r in push.pages])

    double, timeline, reminder_call, confirmed, renewals, again, leg_pages, pushes = asyncio.run(scenario())
    said = " ".join(reminder_call.said)
    assert "You took No heat, 12 Elm St. Press 1 if you are still on it." in said and "Thank you. It stays yours." in said
    assert "stays yours" in confirmed[1] and renewals == 2
    flow = [e.event for e in timeline if e.event in ("acknowledged", "ack_renewed", "ack_expired", "leg_started")]
    assert flow == ["leg_started", "acknowledged", "ack_renewed", "ack_renewed", "ack_expired", "leg_started", "acknowledged"]
    expired = next(e.data for e in timeline if e.event == "ack_expired")
    assert expired["by"] == "alice" and expired["cycle"] == 1
    restarted = [e.data for e in timeline if e.event == "leg_started"][-1]
    assert (restarted["cycle"], restarted["leg_index"], restarted["contacts"]) == (2, 0, ["alice"])
    assert "You have incident e-1" in again[1]
    # the reminders went to the acker alone: nothing ever reached bob (the secondary leg never started)
    assert not [c for c in double.calls if c.to == BOB] and not texts_to(double, BOB)
    assert any(p.reminder for p in pushes) and all(p.contact.id == "alice" for p in pushes)


# -- opted-out numbers ---------------------------------------------------------------------------


def test_stop_makes_sms_pages_fail_at_once_and_start_clears_it(finishing, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            stop = await double.text_in(sms_url(daemon), ALICE, "Stop")
            opted = set(opt_outs.opted_out(daemon.store.engine))
            await publish(nats_server.url, "incidents.urgent", urgent("o-1", "texts"))
            # alice's leg has only SMS: it passes at once and bob is texted without waiting out the window
            await eventually(lambda: texts_to(double, BOB), timeout=10)
            first = events(daemon, "o-1")
            start = await double.text_in(sms_url(daemon), ALICE, "START")
            await publish(nats_server.url, "incidents.urgent", urgent("o-2", "texts"))
            await eventually(lambda: texts_to(double, ALICE))
            return stop, start, opted, first, set(opt_outs.opted_out(daemon.store.engine))

    stop, start, opted, first, after = asyncio.run(scenario())
    assert stop[0] == 200 and "<Message>" not in stop[1] and start[0] == 200  # Twilio answers these itself
    assert opted == {ALICE} and after == set()
    failed = next(e.data for e in first if e.event == "page_failed")
    assert (failed["contact"], failed["channel"], failed["reason"]) == ("alice", "sms", "opted out of SMS (STOP)")
    passed = next(e.data for e in first if e.event == "passed")
    assert passed["leg"] == "primary" and passed["reason"].startswith("unreachable")


def test_twilio_error_21610_marks_the_number_opted_out(finishing, db_url, nats_server, tmp_path) -> None:
    async def scenario():
        async with stack(db_url, nats_server, tmp_path) as (double, daemon, push):
            double.opted_out.add(ALICE)  # she texted STOP to our number before escalator knew (Twilio did)
            await publish(nats_server.url, "incidents.urgent", urgent("o-3", "texts"))
            await eventually(lambda: texts_to(double, BOB), timeout=10)
            requests = double.requests
            await publish(nats_server.url, "incidents.urgent", urgent("o-4", "texts"))
            await eventually(lambda: len(texts_to(double, BOB)) == 2, timeout=10)
            return events(daemon, "o-3"), events(daemon, "o-4"), opt_outs.opted_out(daemon.store.engine), double.requests - requests

    first, second, opted, requests = asyncio.run(scenario())
    assert next(e.data["reason"] for e in first if e.event == "page_failed") == "opted out of SMS (STOP)"
    assert opted[ALICE].source == opt_outs.TWILIO_21610
    # known now: the next page to her fails without asking Twilio (one request: bob's text)
    assert next(e.data["reason"] for e in second if e.event == "page_failed") == "opted out of SMS (STOP)" and requests == 1


# -- an expiring acknowledgement across a restart and a takeover ---------------------------------


def test_an_acknowledgement_expiring_across_a_restart_reopens_once(finishing, db_url, nats_server, tmp_path) -> None:
    """ack_expires 5m at window scale 0.01: 3 s; the reminder has the first leg's 10 s."""
    recorder = RecordingChannel("all")

    def settings(i: int):
        return settings_for(db_url, nats_server.url, tmp_path / f"data{i}", window_scale=0.01)

    async def scenario():
        async with running_daemon(settings(1), recorder) as daemon:
            await publish(nats_server.url, "incidents.urgent", urgent("r-1", "expiring"))
            await eventually(lambda: daemon.store.get("r-1") is not None)
            await publish(nats_server.url, "incidents.ack", {"id": "r-1", "by": "alice"})  # the app gateway, for alice
            await eventually(lambda: status(daemon, "r-1") == "acknowledged")
            deadline = daemon.store.get("r-1").deadline
        assert deadline is not None
        async with running_daemon(settings(2), recorder) as daemon:  # the timer comes back from the database
            await eventually(lambda: any(r.page.reminder for r in recorder.pages), timeout=15)
            await eventually(lambda: "ack_expired" in names(daemon, "r-1"), timeout=30)
            await asyncio.sleep(1.5)
            return events(daemon, "r-1"), status(daemon, "r-1")

    timeline, state = asyncio.run(scenario())
    flow = [e.event for e in timeline if e.event in ("acknowledged", "ack_expired", "leg_started")]
    assert flow == ["leg_started", "acknowledged", "ack_expired", "leg_started"] and state == "open"
    reminders = [r.page for r in recorder.pages if r.page.reminder]
    assert {(p.contact.id, p.channel) for p in reminders} == {("alice", "voice"), ("alice", "sms"), ("alice", "push")}
    assert len(reminders) == 3  # one reminder, on her three channels: nothing armed twice


@pytest.mark.slow
def test_an_expiring_acknowledgement_is_taken_over_by_another_replica(pg_url, nats_server, tmp_path) -> None:
    db = make_engine(pg_url)
    migrate.upgrade(db)
    Catalog(db).apply(ladder_files.load([write(tmp_path / "finishing.yaml", FILES)]), "test", clock.now())
    db.dispose()
    recorders = [RecordingChannel("all"), RecordingChannel("all")]

    def settings(i: int):
        return settings_for(pg_url, nats_server.url, tmp_path / f"data{i}", window_scale=0.01, replica_id=f"r{i}")

    async def scenario():
        async with running_daemon(settings(1), recorders[1]) as second:
            async with running_daemon(settings(0), recorders[0]) as first:
                await first.engine.open(NewIncident("t-1", "expiring", "No heat, 12 Elm St"))
                await first.engine.acknowledge("t-1", "alice", "sms", "alice")
                assert first.store.get("t-1").owner == "r0"
            # r0 stopped (its lease released): r1 takes the acknowledgement's timer over
            await eventually(lambda: second.store.get("t-1").owner == "r1", timeout=15)
            await eventually(lambda: "ack_expired" in names(second, "t-1"), timeout=30)
            await asyncio.sleep(1.5)
            return events(second, "t-1")

    timeline = asyncio.run(scenario())
    assert [e.event for e in timeline].count("ack_expired") == 1
    assert any(r.page.reminder for r in recorders[1].pages)  # the replica that took the timer over reminded her


@pytest.mark.slow
def test_an_acknowledgement_at_one_replica_stops_the_pages_another_is_still_sending(pg_url, nats_server, tmp_path) -> None:
    """An acknowledged incident whose acknowledgement expires is still driven (its timer), but nothing
    may be paged for it any more but the acker's reminder: the replica sending the leg's pages stops them."""
    db = make_engine(pg_url)
    migrate.upgrade(db)
    Catalog(db).apply(ladder_files.load([write(tmp_path / "finishing.yaml", FILES)]), "test", clock.now())
    db.dispose()
    sender, other = RecordingChannel("all"), RecordingChannel("all")
    sender.hang.add("alice")  # a provider that does not answer: her pages stay in flight (10 s window)

    def settings(i: int):
        return settings_for(pg_url, nats_server.url, tmp_path / f"data{i}", window_scale=0.01, replica_id=f"r{i}")

    async def scenario():
        async with running_daemon(settings(0), sender) as first, running_daemon(settings(1), other) as second:
            await first.engine.open(NewIncident("p-1", "expiring", "No heat, 12 Elm St"))
            await eventually(lambda: len(sender.pages) == 3)
            assert first.engine.paging() == {"p-1"}
            await second.engine.acknowledge("p-1", "alice", "nats")  # her app, through the other replica
            await eventually(lambda: first.engine.paging() == set(), timeout=5)  # long before the window's 10 s
            await eventually(lambda: names(second, "p-1").count("page_failed") == 3)
            return events(second, "p-1"), second.store.get("p-1")

    timeline, row = asyncio.run(scenario())
    failed = [e.data for e in timeline if e.event == "page_failed"]
    assert all(f["reason"].startswith("stopped") for f in failed), failed
    assert row.status == "acknowledged" and row.deadline is not None  # its acknowledgement's timer still runs
