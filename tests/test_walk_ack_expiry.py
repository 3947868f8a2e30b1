"""Acknowledgements that expire (SPEC §11), as plain values through the pure state machine."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from escalator import walk as w
from escalator.walk import (
    ACK_TIMER,
    Acknowledge,
    ArmWindow,
    CancelCalls,
    CancelWindow,
    Emit,
    Ignored,
    LegPlan,
    Open,
    PageCmd,
    PageFailed,
    Pass,
    Plan,
    Resolve,
    StopPages,
    Walk,
    WindowExpired,
    decide,
)
from tests.test_walk import ALL, T0, emits, pages  # the walk tests' own helpers

EXPIRES = 600.0


def plan(cycles: int = 0, expires: float | None = EXPIRES) -> Plan:
    return Plan(
        "night", 3, cycles,
        (
            LegPlan("primary", 120, tuple(("alice", c) for c in ALL)),
            LegPlan("secondary", 90, (("bob", "voice"), ("bob", "sms"))),
        ),
        ack_expires_s=expires,
    )


def emitted(cmds, event: str) -> dict:
    return next(c.fields for c in cmds if isinstance(c, Emit) and c.event == event)


def armed(cmds) -> list[ArmWindow]:
    return [c for c in cmds if isinstance(c, ArmWindow)]


def fire(walk: Walk, at: datetime):
    """The armed timer, whatever it times, runs out."""
    assert walk.window is not None
    return decide(walk, WindowExpired(*walk.window), at)


def acked_by_alice(p: Plan | None = None, at: datetime = T0 + timedelta(seconds=30)):
    walk, _ = decide(w.new("inc-1", p or plan()), Open({"summary": "no heat"}), T0)
    return decide(walk, Acknowledge("alice", "sms", "alice"), at)


def test_an_acknowledgement_arms_the_timer_instead_of_ending_every_timer() -> None:
    walk, cmds = acked_by_alice()
    assert walk.status == "acknowledged" and walk.acker == tuple(("alice", c) for c in ALL)
    assert emits(cmds) == ["acknowledged"] and pages(cmds) == []
    assert CancelWindow() in cmds and StopPages() in cmds  # the leg's window and pages end …
    (timer,) = armed(cmds)  # … and one timer replaces them, after the cancel
    assert cmds.index(CancelWindow()) < cmds.index(timer)
    assert timer == ArmWindow(T0 + timedelta(seconds=30 + EXPIRES), 1, ACK_TIMER + 1)
    assert walk.deadline == timer.deadline and walk.window == (1, ACK_TIMER + 1)


def test_without_ack_expires_an_acknowledgement_is_final_as_before() -> None:
    walk, cmds = acked_by_alice(plan(expires=None))
    assert walk.deadline is None and walk.window is None and walk.acker == () and armed(cmds) == []


def test_an_operators_acknowledgement_has_nobody_to_remind_and_never_expires() -> None:
    walk, _ = decide(w.new("inc-1", plan()), Open({}), T0)
    walk, cmds = decide(walk, Acknowledge("ops-maria"), T0)
    assert walk.status == "acknowledged" and walk.deadline is None and armed(cmds) == []


def test_when_the_timer_runs_out_the_acker_alone_is_reminded_on_their_legs_channels() -> None:
    walk, _ = acked_by_alice()
    at = walk.deadline
    walk, cmds = fire(walk, at)
    assert walk.status == "acknowledged" and walk.reminding and walk.acked_by == "alice"
    assert pages(cmds) == [("alice", "voice"), ("alice", "sms"), ("alice", "push")]
    assert all(w.is_reminder(c.key) and c.window_s == 120 for c in cmds if isinstance(c, PageCmd))
    (timer,) = armed(cmds)  # the first leg's window to answer
    assert timer == ArmWindow(at + timedelta(seconds=120), 1, ACK_TIMER + 2)
    assert walk.live == {c.key for c in cmds if isinstance(c, PageCmd)}
    assert emits(cmds) == []  # the reminder's pages are its record (page_sent / page_failed)


def test_a_confirmation_is_ack_renewed_and_restarts_the_timer() -> None:
    walk, _ = acked_by_alice()
    walk, _ = fire(walk, walk.deadline)
    at = walk.deadline - timedelta(seconds=60)
    walk, cmds = decide(walk, Acknowledge("alice", "voice", "alice"), at)
    assert emits(cmds) == ["ack_renewed"] and emitted(cmds, "ack_renewed")["by"] == "alice"
    assert walk.status == "acknowledged" and not walk.reminding and walk.live == frozenset()
    assert armed(cmds) == [ArmWindow(at + timedelta(seconds=EXPIRES), 1, ACK_TIMER + 3)]
    # the reminder's call, if still ringing, stops; its other pages in flight too
    assert CancelCalls(("r2.alice.voice",)) in cmds and StopPages() in cmds


def test_a_confirmation_before_any_reminder_also_restarts_the_timer_but_a_repeat_moments_later_does_not() -> None:
    walk, _ = acked_by_alice()  # at T0 + 30 s
    repeat = T0 + timedelta(seconds=30 + 59)  # within RENEW_QUIET_S (60 s; a tenth of 600 s) of the acknowledgement
    after, cmds = decide(walk, Acknowledge("alice", "sms", "alice"), repeat)
    assert after == walk and cmds[0].kind == w.TAKEN and cmds[0].by == "alice"
    walk, cmds = decide(walk, Acknowledge("alice", "sms", "alice"), T0 + timedelta(minutes=5))
    assert emits(cmds) == ["ack_renewed"] and walk.window == (1, ACK_TIMER + 2)
    assert walk.deadline == T0 + timedelta(minutes=5, seconds=EXPIRES)


def test_nobody_else_can_confirm_and_a_pass_changes_nothing() -> None:
    walk, _ = acked_by_alice()
    walk, _ = fire(walk, walk.deadline)
    for event in (Acknowledge("bob", "sms", "bob"), Acknowledge("ops"), Pass("alice", "sms", "alice")):
        after, cmds = decide(walk, event, walk.deadline)
        assert after == walk and len(cmds) == 1 and cmds[0].kind == w.TAKEN and cmds[0].by == "alice"


def test_an_operator_may_confirm_in_the_ackers_name() -> None:
    walk, _ = acked_by_alice()
    walk, cmds = decide(walk, Acknowledge("alice", w.NATS), T0 + timedelta(minutes=2))
    assert emits(cmds) == ["ack_renewed"]


def test_silence_for_the_first_legs_window_expires_the_ack_and_starts_a_new_cycle() -> None:
    walk, _ = acked_by_alice()
    walk, _ = fire(walk, walk.deadline)
    at = walk.deadline
    walk, cmds = fire(walk, at)
    assert emits(cmds) == ["ack_expired", "leg_started"]
    expired = emitted(cmds, "ack_expired")
    assert expired["by"] == "alice" and expired["contact"] == "alice" and expired["cycle"] == 1 and expired["reason"] == w.NOT_CONFIRMED
    assert walk.status == "open" and walk.acked_by is None and walk.acker == () and (walk.cycle, walk.leg_index) == (2, 0)
    assert pages(cmds) == [("alice", "voice"), ("alice", "sms"), ("alice", "push")]  # the first leg, anew
    assert CancelCalls(("r2.alice.voice",)) in cmds  # the reminder call stops ringing
    assert armed(cmds)[-1] == ArmWindow(at + timedelta(seconds=120), 2, 0)
    # then anyone paged may acknowledge as usual, and the new acknowledgement expires in turn
    walk, cmds = decide(walk, Acknowledge("alice", "voice", "alice"), at + timedelta(seconds=5))
    assert emits(cmds) == ["acknowledged"] and walk.window == (2, ACK_TIMER + 3)


def test_a_reminder_that_reaches_nobody_expires_the_ack_at_once() -> None:
    walk, _ = acked_by_alice()
    walk, cmds = fire(walk, walk.deadline)
    reminders = [c for c in cmds if isinstance(c, PageCmd)]
    for page in reminders[:-1]:
        walk, cmds = decide(walk, PageFailed(page, "sms undelivered"), walk.deadline)
        assert walk.reminding and emits(cmds) == ["page_failed"]
    walk, cmds = decide(walk, PageFailed(reminders[-1], "x"), walk.deadline)
    assert emits(cmds) == ["page_failed", "ack_expired", "leg_started"]
    assert emitted(cmds, "ack_expired")["reason"] == w.REMINDER_UNREACHABLE and walk.status == "open"


def test_a_timer_that_fired_while_a_confirmation_was_decided_is_stale() -> None:
    walk, _ = acked_by_alice()
    old = walk.window
    walk, cmds = decide(walk, Acknowledge("alice", "sms", "alice"), T0 + timedelta(minutes=3))
    assert emits(cmds) == ["ack_renewed"]
    after, cmds = decide(walk, WindowExpired(*old), walk.deadline)
    assert after == walk and cmds[0].kind == w.STALE
    # and the leg's own old window after the acknowledgement, too
    after, cmds = decide(walk, WindowExpired(1, 0), walk.deadline)
    assert after == walk and cmds[0].kind == w.STALE


def test_resolve_stops_the_timer_and_the_reminder() -> None:
    walk, _ = acked_by_alice()
    walk, _ = fire(walk, walk.deadline)
    timer = walk.window
    walk, cmds = decide(walk, Resolve("alice"), walk.deadline)
    assert walk.status == "resolved" and walk.deadline is None and not walk.reminding and walk.live == frozenset()
    assert CancelWindow() in cmds and StopPages() in cmds and CancelCalls(("r2.alice.voice",)) in cmds
    after, cmds = decide(walk, WindowExpired(*timer), T0 + timedelta(hours=1))
    assert after == walk and cmds[0].kind == w.STALE


def test_in_a_later_cycle_the_acker_is_reminded_on_the_leg_they_were_paged_on_last() -> None:
    p = Plan("night", 3, 0, (
        LegPlan("primary", 120, (("alice", "voice"),)),
        LegPlan("secondary", 90, (("bob", "sms"),)),
        LegPlan("fallback", 60, (("alice", "sms"), ("alice", "push"))),
    ), ack_expires_s=EXPIRES)
    walk, _ = decide(w.new("inc-1", p), Open({}), T0)
    for at in (120, 210, 270, 390):  # cycle 1 ends, cycle 2: primary (alice by voice) then secondary
        walk, _ = fire(walk, T0 + timedelta(seconds=at))
    assert (walk.cycle, walk.leg_index) == (2, 1)
    walk, _ = decide(walk, Acknowledge("alice", "sms", "alice"), T0 + timedelta(seconds=400))
    assert walk.acker == (("alice", "voice"),)  # this cycle's primary, not the previous cycle's fallback


def test_an_acker_paged_on_an_earlier_leg_is_reminded_on_that_legs_channels() -> None:
    walk, _ = decide(w.new("inc-1", plan()), Open({}), T0)
    walk, _ = fire(walk, T0 + timedelta(seconds=120))  # secondary: bob by voice and sms
    walk, _ = fire(walk, T0 + timedelta(seconds=210))  # cycle 2, primary: alice
    walk, _ = decide(walk, Acknowledge("bob", "sms", "bob"), T0 + timedelta(seconds=215))
    assert walk.acker == (("bob", "voice"), ("bob", "sms"))
    walk, cmds = fire(walk, walk.deadline)
    assert pages(cmds) == [("bob", "voice"), ("bob", "sms")]


def test_an_acknowledgement_of_an_exhausted_ladder_expires_too_and_the_cycles_limit_still_counts() -> None:
    walk, _ = decide(w.new("inc-1", plan(cycles=1)), Open({}), T0)
    walk, _ = fire(walk, T0 + timedelta(seconds=120))
    walk, _ = fire(walk, T0 + timedelta(seconds=210))
    assert walk.status == "exhausted"
    walk, _ = decide(walk, Acknowledge("bob", "voice", "bob"), T0 + timedelta(seconds=220))
    assert walk.acker == (("bob", "voice"), ("bob", "sms"))
    walk, _ = fire(walk, walk.deadline)
    walk, cmds = fire(walk, walk.deadline)  # expired: a new cycle although cycles is 1 …
    assert (walk.status, walk.cycle) == ("open", 2)
    walk, _ = fire(walk, walk.deadline)
    walk, cmds = fire(walk, walk.deadline)  # … and after its last leg, exhaustion again, with pages of its own
    assert walk.status == "exhausted" and "exhausted" in emits(cmds)
    assert {c.key for c in cmds if isinstance(c, PageCmd)} == {"x2.alice.voice", "x2.alice.sms", "x2.alice.push", "x2.bob.voice", "x2.bob.sms"}


def test_the_state_round_trips_through_plain_dicts() -> None:
    walk, _ = acked_by_alice()
    walk, _ = fire(walk, walk.deadline)
    assert Walk.from_dict("inc-1", Plan.from_dict(walk.plan.to_dict()), walk.to_dict()) == walk
    assert Plan.from_dict(replace(plan(), connect_caller=False).to_dict()).connect_caller is False


# -- properties over any script ------------------------------------------------------------------

STEPS = st.sampled_from(["fire", "ack-alice", "ack-bob", "ack-ops", "renew-ops", "resolve", "fail", "stale", "pass"])


@settings(max_examples=400, deadline=None)
@given(cycles=st.integers(0, 2), script=st.lists(STEPS, max_size=40))
def test_properties_of_any_walk_with_expiring_acknowledgements(cycles: int, script: list[str]) -> None:
    walk, cmds = decide(w.new("inc-1", plan(cycles)), Open({}), T0)
    t = T0
    timers = [walk.window]
    resolved = False
    keys = {c.key for c in cmds if isinstance(c, PageCmd)}
    for step in script:
        t += timedelta(seconds=11)
        before = walk
        if step == "fire" and walk.window is not None:
            walk, cmds = fire(walk, t)
        elif step == "fire":
            continue
        elif step == "stale":
            walk, cmds = decide(walk, WindowExpired(walk.cycle, ACK_TIMER + walk.ack_timer + 7), t)
        elif step == "ack-alice":
            walk, cmds = decide(walk, Acknowledge("alice", "sms", "alice"), t)
        elif step == "ack-bob":
            walk, cmds = decide(walk, Acknowledge("bob", "voice", "bob"), t)
        elif step == "ack-ops":
            walk, cmds = decide(walk, Acknowledge("ops"), t)
        elif step == "renew-ops":
            walk, cmds = decide(walk, Acknowledge(walk.acked_by or "nobody", w.NATS), t)
        elif step == "resolve":
            walk, cmds = decide(walk, Resolve("ops"), t)
        elif step == "pass":
            walk, cmds = decide(walk, Pass("ops"), t)
        elif walk.live:
            key = sorted(walk.live)[0]
            contact, channel = key.split(".")[-2:]
            walk, cmds = decide(walk, PageFailed(PageCmd(key, contact, channel, walk.cycle, walk.leg_index, "x", 1), "x"), t)
        else:
            continue
        # every page of an incident has a key of its own (its row's and its SMS code's key), even
        # when the walk is exhausted a second time after an expired acknowledgement
        new_keys = [c.key for c in cmds if isinstance(c, PageCmd)]
        assert len(set(new_keys)) == len(new_keys) and not keys & set(new_keys), (keys, new_keys)
        keys |= set(new_keys)
        # resolve is final: nothing paged, nothing armed after it
        if resolved:
            assert walk.status == "resolved" and pages(cmds) == [] and armed(cmds) == []
        resolved = resolved or walk.status == "resolved"
        # one timer at most, set exactly while walking or while an acknowledgement can expire
        assert (walk.deadline is not None) == (walk.status == "open" or (walk.status == "acknowledged" and bool(walk.acker)))
        assert len(armed(cmds)) <= 2  # an expiry arms the new leg's window after the reminder's is over
        if armed(cmds):
            assert (armed(cmds)[-1].cycle, armed(cmds)[-1].leg_index) == walk.window
            timers.append(walk.window)
        # timers only move forward: what Windows.arm(only_if_newer=True) relies on after a takeover
        assert timers == sorted(timers, key=lambda x: x or (0, 0))
        # while acknowledged, only the acker is paged, and only by a reminder
        if before.status == "acknowledged" and walk.status == "acknowledged":
            assert all(w.is_reminder(c.key) and c.contact == walk.acker[0][0] for c in cmds if isinstance(c, PageCmd))
        # ack_expired only from a reminder nobody answered, and it re-opens the walk at the first leg
        if "ack_expired" in emits(cmds):
            assert before.reminding and walk.status == "open" and walk.leg_index == 0 and walk.cycle == before.cycle + 1
        if "ack_renewed" in emits(cmds):
            assert before.status == "acknowledged" and walk.acked_by == before.acked_by and not walk.reminding
        # live pages: the current leg's while open, the reminder's while reminding, none otherwise
        if walk.status == "open":
            assert all(k.startswith(f"c{walk.cycle}.l{walk.leg_index}.") for k in walk.live)
        elif walk.reminding:
            assert walk.status == "acknowledged" and all(k.startswith(f"r{walk.ack_timer}.") for k in walk.live)
        else:
            assert walk.live == frozenset()
        # an event that changes nothing says why; seq stays dense
        if walk == before:
            assert len(cmds) == 1 and isinstance(cmds[0], Ignored)
        seqs = [c.seq for c in cmds if isinstance(c, Emit)]
        assert seqs == list(range(before.seq + 1, before.seq + 1 + len(seqs)))


def test_an_acknowledgement_over_nats_by_a_paged_contact_expires_and_reminds_them() -> None:
    walk, _ = decide(w.new("inc-1", plan()), Open({}), T0)
    walk, _ = decide(walk, Acknowledge("alice", w.NATS), T0)
    assert walk.acker == tuple(("alice", c) for c in ALL) and walk.window == (1, ACK_TIMER + 1)
