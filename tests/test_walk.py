"""Every rule of SPEC §4 as plain values through the pure state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from escalator import walk as w
from escalator.walk import (
    Acknowledge,
    ArmWindow,
    CancelCalls,
    CancelWindow,
    Emit,
    Ignored,
    LegPlan,
    Notify,
    Open,
    PageCmd,
    PageFailed,
    PageSent,
    Pass,
    Plan,
    Recorded,
    Reject,
    Resolve,
    SetPage,
    StopPages,
    WindowExpired,
    decide,
)

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
ALL = ("voice", "sms", "push")


def plan(cycles: int = 0, windows=(120, 90, 120)) -> Plan:
    return Plan(
        "night",
        3,
        cycles,
        (
            LegPlan("primary", windows[0], tuple(("alice", c) for c in ALL)),
            LegPlan("secondary", windows[1], tuple(("bob", c) for c in ALL)),
            LegPlan("fallback", windows[2], (("carol", "voice"), ("carol", "sms"), ("dave", "voice"))),
        ),
    )


def opened(p: Plan | None = None):
    return decide(w.new("inc-1", p or plan()), Open({"summary": "no heat"}), T0)


def emits(cmds) -> list[str]:
    return [c.event for c in cmds if isinstance(c, Emit)]


def pages(cmds) -> list[tuple[str, str]]:
    return [(c.contact, c.channel) for c in cmds if isinstance(c, PageCmd)]


def expire(walk, at):
    return decide(walk, WindowExpired(walk.cycle, walk.leg_index), at)


def unchanged(result, walk, kind: str, by: str | None = None) -> None:
    """The decision changed nothing and says why."""
    after, cmds = result
    assert after == walk and len(cmds) == 1 and isinstance(cmds[0], Ignored), cmds
    assert cmds[0].kind == kind and cmds[0].reason and cmds[0].by == by, cmds[0]


def test_open_pages_the_first_leg_on_every_channel_and_arms_its_window() -> None:
    walk, cmds = opened()
    assert emits(cmds) == ["opened", "leg_started"]
    assert pages(cmds) == [("alice", "voice"), ("alice", "sms"), ("alice", "push")]
    assert [c for c in cmds if isinstance(c, ArmWindow)] == [ArmWindow(T0 + timedelta(seconds=120), 1, 0)]
    assert (walk.status, walk.cycle, walk.leg_index, walk.deadline) == ("open", 1, 0, T0 + timedelta(seconds=120))
    first = cmds[0]
    assert first.fields == {"ladder": "night", "version": 3, "summary": "no heat"} and first.seq == 1 and first.at == T0
    assert cmds[1].fields == {"cycle": 1, "leg": "primary", "leg_index": 0, "window_s": 120, "contacts": ["alice"]}


def test_legs_in_order_with_their_own_windows() -> None:
    walk, _ = opened()
    t1 = T0 + timedelta(seconds=120)
    walk, cmds = expire(walk, t1)
    assert emits(cmds) == ["leg_timed_out", "leg_started"]
    assert pages(cmds) == [("bob", c) for c in ALL]
    assert [c.deadline for c in cmds if isinstance(c, ArmWindow)] == [t1 + timedelta(seconds=90)]
    walk, cmds = expire(walk, t1 + timedelta(seconds=90))
    assert pages(cmds) == [("carol", "voice"), ("carol", "sms"), ("dave", "voice")]
    assert walk.leg_index == 2 and walk.cycle == 1


def test_cycles_zero_walks_forever() -> None:
    walk, _ = opened()
    t = T0
    for _ in range(3 * 5):
        t += timedelta(seconds=200)
        walk, cmds = expire(walk, t)
        assert walk.status == "open"
    assert walk.cycle == 6 and walk.leg_index == 0
    assert [c for c in cmds if isinstance(c, Emit)][1].fields["cycle"] == 6


def test_cycles_reached_exhausts_and_pages_everyone_at_once() -> None:
    walk, _ = opened(plan(cycles=2))
    t = T0
    for _ in range(5):
        t += timedelta(minutes=3)
        walk, cmds = expire(walk, t)
    assert walk.cycle == 2 and walk.leg_index == 2
    walk, cmds = expire(walk, t + timedelta(minutes=3))
    assert emits(cmds) == ["leg_timed_out", "exhausted"]
    assert sorted(pages(cmds)) == sorted(
        [("alice", c) for c in ALL] + [("bob", c) for c in ALL] + [("carol", "voice"), ("carol", "sms"), ("dave", "voice")]
    )
    assert walk.status == "exhausted" and walk.deadline is None
    assert not [c for c in cmds if isinstance(c, ArmWindow)]
    # still open for acknowledgment, and no more timers to act on
    unchanged(expire(walk, t + timedelta(hours=1)), walk, w.STALE)
    acked, cmds = decide(walk, Acknowledge("erin-the-operator"), t + timedelta(hours=1))
    assert acked.status == "acknowledged" and emits(cmds) == ["acknowledged"]


def test_first_ack_wins_and_stops_everything() -> None:
    walk, _ = opened()
    walk, cmds = decide(walk, Acknowledge("alice", "sms", "alice"), T0 + timedelta(seconds=30))
    assert walk.status == "acknowledged" and walk.acked_by == "alice"
    assert CancelWindow() in cmds and emits(cmds) == ["acknowledged"]
    assert [c for c in cmds if isinstance(c, Emit)][0].fields == {
        "by": "alice", "channel": "sms", "contact": "alice", "cycle": 1, "leg": "primary", "leg_index": 0
    }
    assert pages(cmds) == []
    # a second ack, a pass, the old window: nothing changes, nothing is paged
    unchanged(decide(walk, Acknowledge("bob", "voice", None), T0), walk, w.TAKEN, by="alice")
    unchanged(decide(walk, Pass("alice", "voice", "alice"), T0), walk, w.TAKEN, by="alice")
    unchanged(decide(walk, WindowExpired(1, 0), T0), walk, w.STALE)


def test_ack_from_someone_paged_earlier_in_the_walk() -> None:
    walk, _ = opened()
    walk, _ = expire(walk, T0 + timedelta(seconds=120))  # now on bob's leg
    walk, cmds = decide(walk, Acknowledge("alice", "voice", "alice"), T0 + timedelta(seconds=150))
    assert walk.status == "acknowledged" and walk.acked_by == "alice"
    assert [c for c in cmds if isinstance(c, Notify)] == [Notify("bob", "taken", "alice")]


def test_ack_from_someone_never_paged_is_ignored_but_operators_may_ack() -> None:
    walk, _ = opened()
    unchanged(decide(walk, Acknowledge("carol", "sms", "carol"), T0), walk, w.NOT_PAGED)
    walk2, cmds = decide(walk, Acknowledge("ops-manager"), T0)
    assert walk2.status == "acknowledged" and [c for c in cmds if isinstance(c, Notify)] == [Notify("alice", "taken", "ops-manager")]


def test_pass_ends_the_leg_now() -> None:
    walk, _ = opened()
    walk, cmds = decide(walk, Pass("alice", "voice", "alice", 1, 0), T0 + timedelta(seconds=10))
    assert emits(cmds) == ["passed", "leg_started"]
    assert walk.leg_index == 1 and walk.deadline == T0 + timedelta(seconds=100)
    assert pages(cmds) == [("bob", c) for c in ALL]


def test_late_pass_for_an_older_leg_changes_nothing() -> None:
    walk, _ = opened()
    walk, _ = expire(walk, T0 + timedelta(seconds=120))
    unchanged(decide(walk, Pass("alice", "voice", "alice", 1, 0), T0 + timedelta(seconds=130)), walk, w.STALE)
    unchanged(decide(walk, Pass("alice", "sms", "alice"), T0 + timedelta(seconds=130)), walk, w.NOT_THIS_LEG)
    walk2, cmds = decide(walk, Pass("ops"), T0 + timedelta(seconds=130))  # an operator passes the current leg
    assert walk2.leg_index == 2 and emits(cmds)[0] == "passed"


def test_pass_on_the_last_leg_starts_the_next_cycle_or_exhausts() -> None:
    walk, _ = opened(plan(cycles=1))
    walk, _ = expire(walk, T0 + timedelta(minutes=2))
    walk, _ = expire(walk, T0 + timedelta(minutes=4))
    walk, cmds = decide(walk, Pass("carol", "sms", "carol"), T0 + timedelta(minutes=5))
    assert walk.status == "exhausted" and emits(cmds) == ["passed", "exhausted"]
    again, _ = opened(plan(cycles=0))
    again, _ = expire(again, T0 + timedelta(minutes=2))
    again, _ = expire(again, T0 + timedelta(minutes=4))
    again, cmds = decide(again, Pass("dave", "voice", "dave"), T0 + timedelta(minutes=5))
    assert (again.cycle, again.leg_index) == (2, 0) and pages(cmds) == [("alice", c) for c in ALL]


def _page(walk, contact, channel) -> PageCmd:
    return PageCmd(f"c{walk.cycle}.l{walk.leg_index}.{contact}.{channel}", contact, channel, walk.cycle, walk.leg_index, walk.leg.name, walk.leg.window_s)


def test_leg_that_reaches_nobody_moves_on_at_once() -> None:
    walk, _ = opened()
    t = T0 + timedelta(seconds=5)
    walk, cmds = decide(walk, PageFailed(_page(walk, "alice", "voice"), "rejected: 400"), t)
    walk, cmds = decide(walk, PageFailed(_page(walk, "alice", "sms"), "breaker open"), t)
    assert walk.leg_index == 0 and emits(cmds) == ["page_failed"]
    walk, cmds = decide(walk, PageFailed(_page(walk, "alice", "push"), "retries used up"), t)
    assert emits(cmds) == ["page_failed", "passed", "leg_started"]
    passed = [c for c in cmds if isinstance(c, Emit)][1]
    assert passed.fields["reason"].startswith("unreachable") and "by" not in passed.fields
    assert walk.leg_index == 1 and walk.deadline == t + timedelta(seconds=90)


def test_a_failure_after_a_success_still_counts_only_failures() -> None:
    walk, _ = opened()
    walk, cmds = decide(walk, PageSent(_page(walk, "alice", "sms"), "SM1"), T0)
    assert emits(cmds) == ["page_sent"] and walk.leg_index == 0
    for channel in ("voice", "push"):
        walk, _ = decide(walk, PageFailed(_page(walk, "alice", channel), "x"), T0)
    assert walk.leg_index == 0  # the SMS may still be read: wait out the window
    walk, _ = decide(walk, PageFailed(_page(walk, "alice", "sms"), "undelivered"), T0)  # a status callback
    assert walk.leg_index == 1


def test_failures_of_an_older_leg_do_not_move_the_current_one() -> None:
    walk, _ = opened()
    old = _page(walk, "alice", "voice")
    walk, _ = expire(walk, T0 + timedelta(seconds=120))
    walk2, cmds = decide(walk, PageFailed(old, "no-answer"), T0 + timedelta(seconds=125))
    assert emits(cmds) == ["page_failed"] and walk2.leg_index == 1 and walk2.live == walk.live


def test_an_unreachable_last_leg_does_not_spin_into_a_new_cycle() -> None:
    walk, _ = opened()
    t = T0
    for _ in range(3):  # every page of every leg fails at once: a total outage
        for contact, channel in walk.leg.targets:
            walk, cmds = decide(walk, PageFailed(_page(walk, contact, channel), "breaker open"), t)
    assert (walk.cycle, walk.leg_index, walk.status) == (1, 2, "open")
    assert emits(cmds)[-1] == "passed" and not pages(cmds)
    walk, cmds = expire(walk, walk.deadline)  # the window starts the next cycle
    assert (walk.cycle, walk.leg_index) == (2, 0) and pages(cmds)


def test_unreachable_last_leg_with_cycles_reached_exhausts() -> None:
    walk, _ = opened(plan(cycles=1))
    for _ in range(3):
        for contact, channel in walk.leg.targets:
            walk, cmds = decide(walk, PageFailed(_page(walk, contact, channel), "x"), T0)
    assert walk.status == "exhausted" and emits(cmds)[-1] == "exhausted"


def test_a_ladder_nobody_can_be_paged_on_exhausts_at_once() -> None:
    empty = Plan("x", 1, 0, (LegPlan("a", 60, ()), LegPlan("b", 60, ())))
    walk, cmds = opened(empty)
    assert walk.status == "exhausted" and emits(cmds) == ["opened", "exhausted"]
    partly = Plan("x", 1, 0, (LegPlan("a", 60, ()), LegPlan("b", 60, (("bob", "sms"),))))
    walk, cmds = opened(partly)
    assert emits(cmds) == ["opened", "leg_started", "passed", "leg_started"] and walk.leg_index == 1


def test_resolve_stops_everything_and_later_acks_change_nothing() -> None:
    walk, _ = opened()
    walk, cmds = decide(walk, Resolve("dispatcher"), T0 + timedelta(seconds=30))
    assert walk.status == "resolved" and CancelWindow() in cmds and emits(cmds) == ["resolved"]
    for event, kind in ((Acknowledge("alice", "sms", "alice"), w.CLOSED), (Pass("alice"), w.CLOSED),
                        (WindowExpired(1, 0), w.STALE), (Resolve("x"), w.CLOSED), (Open(), w.REPEAT)):
        unchanged(decide(walk, event, T0 + timedelta(seconds=60)), walk, kind)
    # page results still reach the audit timeline, but move nothing
    walk2, cmds = decide(walk, PageFailed(PageCmd("c1.l0.alice.sms", "alice", "sms", 1, 0, "primary", 120), "x"), T0)
    assert emits(cmds) == ["page_failed"] and walk2.status == "resolved"


def test_resolve_after_acknowledgement() -> None:
    walk, _ = opened()
    walk, _ = decide(walk, Acknowledge("alice", "voice", "alice"), T0)
    walk, cmds = decide(walk, Resolve(), T0)
    assert walk.status == "resolved" and emits(cmds) == ["resolved"]


def test_seq_counts_every_event_in_order() -> None:
    walk, a = opened()
    walk, b = expire(walk, T0 + timedelta(minutes=2))
    walk, c = decide(walk, Acknowledge("bob", "sms", "bob"), T0 + timedelta(minutes=3))
    seqs = [x.seq for x in a + b + c if isinstance(x, Emit)]
    assert seqs == list(range(1, len(seqs) + 1)) and walk.seq == seqs[-1]


def test_state_round_trips_through_plain_dicts() -> None:
    walk, _ = opened()
    walk, _ = expire(walk, T0 + timedelta(minutes=2))
    again = w.Walk.from_dict("inc-1", Plan.from_dict(walk.plan.to_dict()), walk.to_dict())
    assert again == walk


def test_the_walk_imports_only_what_its_allow_list_names() -> None:
    """Pure: no I/O, no clock, no library; if this list grows, something impure crept in."""
    import ast
    from pathlib import Path

    allowed = {"__future__", "dataclasses", "datetime", "typing"}
    tree = ast.parse(Path(w.__file__).read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules == allowed, modules


def test_an_acknowledgement_stops_pages_in_flight_and_a_resolve_too() -> None:
    walk, _ = opened()
    _, acked = decide(walk, Acknowledge("alice", "voice", "alice"), T0)
    _, resolved = decide(walk, Resolve("ops"), T0)
    assert StopPages() in acked and StopPages() in resolved
    _, passed = decide(walk, Pass("ops"), T0)
    assert StopPages() not in passed  # a pass moves on; the old leg's pages may still be answered


def test_page_outcomes_are_recorded_once_and_a_failure_reported_first_stays_failed() -> None:
    walk, _ = opened()
    sms = _page(walk, "alice", "sms")
    _, cmds = decide(walk, PageSent(sms, "SM1", Recorded("pending")), T0)
    assert SetPage(sms.key, "sent", "SM1", None) in cmds and emits(cmds) == ["page_sent"]
    unchanged(decide(walk, PageSent(sms, "SM1", Recorded("sent", "SM1")), T0), walk, w.REPEAT)  # a retry of the same answer
    _, cmds = decide(walk, PageSent(sms, "SM1", Recorded("failed", None, "undelivered")), T0)  # the callback came first
    assert SetPage(sms.key, "failed", "SM1", "undelivered") in cmds
    _, cmds = decide(walk, PageFailed(sms, "undelivered", Recorded("sent", "SM1")), T0)
    assert SetPage(sms.key, "failed", "SM1", "undelivered") in cmds and emits(cmds) == ["page_failed"]
    unchanged(decide(walk, PageFailed(sms, "undelivered", Recorded("failed", "SM1", "undelivered")), T0), walk, w.REPEAT)
    _, cmds = decide(walk, PageFailed(sms, "x"), T0)  # no row known: the event is still recorded
    assert emits(cmds) == ["page_failed"] and not [c for c in cmds if isinstance(c, SetPage)]


def test_a_rejected_message_takes_the_next_seq_whatever_the_status() -> None:
    walk, cmds = opened()
    for state in (walk, decide(walk, Resolve("ops"), T0)[0]):
        after, cmds = decide(state, Reject("could not be processed"), T0)
        assert emits(cmds) == ["rejected"] and cmds[0].seq == state.seq + 1 and cmds[0].fields == {"reason": "could not be processed"}
        assert after.status == state.status and after.seq == state.seq + 1


def test_which_channels_reach_whom_and_which_pages_still_matter() -> None:
    assert w.reachable("voice", True, False) and w.reachable("sms", True, False) and not w.reachable("push", True, False)
    assert w.reachable("push", False, True) and not w.reachable("voice", False, True) and not w.reachable("fax", True, True)
    walk, _ = opened()
    assert w.is_current(walk, "c1.l0.alice.voice") and not w.is_current(walk, "c1.l1.bob.voice")
    walk, _ = expire(walk, T0 + timedelta(minutes=2))
    assert not w.is_current(walk, "c1.l0.alice.voice") and w.is_current(walk, "c1.l1.bob.sms")
    done, _ = decide(walk, Acknowledge("bob", "sms", "bob"), T0)
    assert not w.is_current(done, "c1.l1.bob.sms")


def test_every_ignored_acknowledgement_says_why_in_words() -> None:
    walk, _ = opened()
    taken, _ = decide(walk, Acknowledge("alice", "sms", "alice"), T0)
    _, cmds = decide(taken, Acknowledge("bob", "voice"), T0)
    assert cmds[0].reason == "already acknowledged by alice" and cmds[0].noteworthy
    _, cmds = decide(walk, Acknowledge("zoe", "sms", "zoe"), T0)
    assert cmds[0].reason == "zoe was not paged for this incident"
    assert w.describe(Acknowledge("bob", "sms", "bob")) == "acknowledgement by bob over SMS"
    assert w.describe(Pass("ops", "nats")) == "pass by ops over NATS"


# -- properties ------------------------------------------------------------------------------------

EVENTS = st.sampled_from(["expire", "ack", "pass", "fail", "sent", "resolve", "stale", "late-pass"])


@settings(max_examples=300, deadline=None)
@given(cycles=st.integers(0, 3), script=st.lists(EVENTS, max_size=40))
def test_properties_of_any_walk(cycles: int, script: list[str]) -> None:
    walk, cmds = opened(plan(cycles=cycles))
    t = T0
    started: list[tuple[int, int]] = [(1, 0)]
    closed = False
    for step in script:
        t += timedelta(seconds=7)
        before, cmds = walk, []
        if step == "expire":
            walk, cmds = expire(walk, t)
        elif step == "ack":
            walk, cmds = decide(walk, Acknowledge("ops"), t)
        elif step == "pass":
            walk, cmds = decide(walk, Pass("ops"), t)
        elif step == "resolve":
            walk, cmds = decide(walk, Resolve("ops"), t)
        elif step == "stale":
            walk, cmds = decide(walk, WindowExpired(walk.cycle + 5, 0), t)
        elif step == "late-pass":
            walk, cmds = decide(walk, Pass("alice", "voice", "alice", walk.cycle - 1, 0), t)
        elif walk.live:
            key = sorted(walk.live)[0]
            contact, channel = key.split(".")[2:]
            page = PageCmd(key, contact, channel, walk.cycle, walk.leg_index, walk.leg.name, walk.leg.window_s)
            walk, cmds = decide(walk, PageFailed(page, "x") if step == "fail" else PageSent(page), t)
        # never pages after an acknowledgement or a resolve
        if closed or before.status in ("acknowledged", "resolved"):
            assert pages(cmds) == []
        closed = closed or walk.status in ("acknowledged", "resolved")
        # never skips a leg: each leg_started is the next leg of this cycle, or leg 0 of the next cycle
        for c in cmds:
            if isinstance(c, Emit) and c.event == "leg_started":
                prev = started[-1]
                here = (c.fields["cycle"], c.fields["leg_index"])
                assert here in ((prev[0], prev[1] + 1), (prev[0] + 1, 0))
                if here[1] == 0:
                    assert prev[1] == 2  # a cycle always runs to its last leg before the next starts
                started.append(here)
        # bounded cycles always end in exhaustion, never a cycle too many
        if cycles:
            assert walk.cycle <= cycles
        # the window is armed exactly while the walk is open
        assert (walk.deadline is not None) == (walk.status == "open")
        # an event that changes nothing says why, and nothing else
        decided = step not in ("fail", "sent") or before.live
        if decided and walk == before:
            assert len(cmds) == 1 and isinstance(cmds[0], Ignored) and cmds[0].reason
        elif decided:
            assert not [c for c in cmds if isinstance(c, Ignored)]
        # live pages only of the current leg, and only while walking
        assert all(k.startswith(f"c{walk.cycle}.l{walk.leg_index}.") for k in walk.live)
        assert walk.live == frozenset() or walk.status == "open"
        # seq is dense
        seqs = [c.seq for c in cmds if isinstance(c, Emit)]
        assert seqs == list(range(before.seq + 1, before.seq + 1 + len(seqs)))


def test_calls_of_a_leg_that_ends_are_stopped() -> None:
    """A leg over (window, pass) or an incident taken or resolved: its calls that may still be queued
    or ringing are cancelled; a call accepted only after its leg ended too."""
    walk, _ = opened()
    first_call = _page(walk, "alice", "voice")
    ended, cmds = expire(walk, T0 + timedelta(minutes=2))
    assert CancelCalls(("c1.l0.alice.voice",)) in cmds
    _, cmds = decide(ended, Pass("ops"), T0)
    assert CancelCalls(("c1.l1.bob.voice",)) in cmds
    _, cmds = decide(ended, Acknowledge("bob", "sms", "bob"), T0)
    assert CancelCalls(("c1.l1.bob.voice",)) in cmds
    _, cmds = decide(ended, Resolve("ops"), T0)
    assert CancelCalls(("c1.l1.bob.voice",)) in cmds
    _, cmds = decide(ended, PageSent(first_call, "CA1", Recorded("pending")), T0)  # alice's call, accepted late
    assert CancelCalls(refs=("CA1",)) in cmds
    _, cmds = decide(walk, PageSent(first_call, "CA2", Recorded("pending")), T0)  # on time: it rings
    assert not [c for c in cmds if isinstance(c, CancelCalls)]
    exhausted, _ = opened(plan(cycles=1))
    for _ in range(3):
        exhausted, _ = expire(exhausted, T0 + timedelta(minutes=10))
    assert exhausted.status == "exhausted"
    _, cmds = decide(exhausted, Acknowledge("ops"), T0)
    assert CancelCalls(("x1.alice.voice", "x1.bob.voice", "x1.carol.voice", "x1.dave.voice")) in cmds


# -- scheduled legs (SPEC §10): who is on call arrives as data --------------------------------------

R = w.Reach


def scheduled_plan(cycles: int = 0) -> Plan:
    return Plan(
        "night", 4, cycles,
        (
            LegPlan("primary", 120, (), ("techs",), ALL),
            LegPlan("secondary", 90, (("erin", "sms"),), ("backup",), ("voice", "sms")),
            LegPlan("fallback", 60, (("zed", "voice"),)),
        ),
    )


def test_a_scheduled_leg_pages_its_fixed_contacts_then_whoever_is_on_call_when_it_starts() -> None:
    p = scheduled_plan()
    on_call = {"techs": (R("alice", True, True), R("pat", False, True)), "backup": (R("bob", True, False),)}
    walk, cmds = decide(w.new("inc-1", p), Open(), T0, on_call)
    # pat has no phone: push only; every channel of the leg for alice
    assert pages(cmds) == [("alice", "voice"), ("alice", "sms"), ("alice", "push"), ("pat", "push")]
    started = [c for c in cmds if isinstance(c, Emit) and c.event == "leg_started"][0]
    assert started.fields["contacts"] == ["alice", "pat"] and started.fields["schedules"] == ["techs"]
    # the next leg resolves at its own start: bob is gone from backup, carol came on
    later = {"techs": (R("alice", True, True),), "backup": (R("carol", True, True),)}
    walk, cmds = decide(walk, WindowExpired(1, 0), T0 + timedelta(seconds=120), later)
    assert pages(cmds) == [("erin", "sms"), ("carol", "voice"), ("carol", "sms")]
    started = [c for c in cmds if isinstance(c, Emit) and c.event == "leg_started"][0]
    assert started.fields["contacts"] == ["erin", "carol"] and started.fields["schedules"] == ["backup"]
    # a fixed leg says who it pages and names no schedule
    walk, cmds = decide(walk, WindowExpired(1, 1), T0 + timedelta(seconds=210), later)
    started = [c for c in cmds if isinstance(c, Emit) and c.event == "leg_started"][0]
    assert started.fields["contacts"] == ["zed"] and "schedules" not in started.fields


def test_the_shell_is_asked_for_who_is_on_call_only_when_a_leg_may_start() -> None:
    p = scheduled_plan()
    fresh = w.new("inc-1", p)
    assert w.needs_on_call(fresh, Open()) == {"techs", "backup"}
    walk, _ = decide(fresh, Open(), T0, {"techs": (R("alice", True, True),)})
    assert w.needs_on_call(walk, WindowExpired(1, 0)) == {"techs", "backup"}
    assert w.needs_on_call(walk, Pass("ops")) == {"techs", "backup"}
    assert w.needs_on_call(walk, Acknowledge("ops")) == frozenset()
    assert w.needs_on_call(walk, PageFailed(_page(walk, "alice", "sms"), "x")) == frozenset()  # others still live
    assert w.needs_on_call(w.new("x", plan()), Open()) == frozenset()  # nothing scheduled: no lookup
    try:
        decide(fresh, Open(), T0)
    except ValueError as exc:
        assert "needs_on_call" in str(exc)
    else:
        raise AssertionError("a scheduled leg started without knowing who is on call")


def test_nobody_on_call_passes_the_leg_at_once_and_the_last_leg_rule_holds() -> None:
    p = scheduled_plan()
    walk, cmds = decide(w.new("inc-1", p), Open(), T0, {})
    assert emits(cmds) == ["opened", "leg_started", "passed", "leg_started"]
    passed = [c for c in cmds if isinstance(c, Emit) and c.event == "passed"][0]
    assert passed.fields["reason"] == "nobody on call" and walk.leg_index == 1
    assert pages(cmds) == [("erin", "sms")]  # the secondary's fixed contact still gets paged
    # a last leg on a schedule with nobody on call: no new cycle early, the window starts it
    last = Plan("night", 4, 0, (LegPlan("a", 60, (("zed", "sms"),)), LegPlan("b", 60, (), ("techs",), ALL)))
    walk, cmds = decide(w.new("inc-2", last), Open(), T0, {})
    walk, cmds = decide(walk, WindowExpired(1, 0), T0 + timedelta(seconds=60), {})
    assert emits(cmds)[-1] == "passed" and walk.status == "open" and (walk.cycle, walk.leg_index) == (1, 1)
    assert walk.deadline == T0 + timedelta(seconds=120)


def test_a_pass_from_the_person_on_call_counts_and_exhaustion_pages_who_was_and_who_is_on_call() -> None:
    p = scheduled_plan(cycles=1)
    walk, _ = decide(w.new("inc-1", p), Open(), T0, {"techs": (R("alice", True, True),)})
    unchanged(decide(walk, Pass("bob", "sms", "bob"), T0), walk, w.NOT_THIS_LEG)
    walk, cmds = decide(walk, Pass("alice", "sms", "alice"), T0, {"techs": (R("alice", True, True),), "backup": (R("bob", True, False),)})
    assert emits(cmds)[:2] == ["passed", "leg_started"] and walk.leg_index == 1
    # the hand-over happens: dan is on call for techs now; the ladder runs out
    now = {"techs": (R("dan", True, False),), "backup": (R("bob", True, False),)}
    walk, _ = decide(walk, WindowExpired(1, 1), T0 + timedelta(seconds=90), now)
    walk, cmds = decide(walk, WindowExpired(1, 2), T0 + timedelta(seconds=150), now)
    assert walk.status == "exhausted"
    paged = set(pages(cmds))
    assert {("alice", "voice"), ("alice", "sms"), ("alice", "push"), ("dan", "voice"), ("dan", "sms")} <= paged
    assert {("erin", "sms"), ("bob", "voice"), ("bob", "sms"), ("zed", "voice")} <= paged
    # stopping the exhaustion's calls covers the people on call too
    walk2, cmds = decide(walk, Acknowledge("ops"), T0 + timedelta(seconds=160))
    cancelled = [c for c in cmds if isinstance(c, CancelCalls)][0].keys
    assert "x1.dan.voice" in cancelled and "x1.alice.voice" in cancelled
    # the resolved targets survive a round trip through the stored state
    again = w.Walk.from_dict("inc-1", Plan.from_dict(p.to_dict()), walk.to_dict())
    assert again == walk


ROSTERS = st.fixed_dictionaries({
    "techs": st.lists(st.sampled_from([R("alice", True, True), R("pat", False, True), R("sam", True, False)]), max_size=3, unique=True).map(tuple),
    "backup": st.lists(st.sampled_from([R("bob", True, False), R("carol", True, True)]), max_size=2, unique=True).map(tuple),
})


@settings(max_examples=200, deadline=None)
@given(cycles=st.integers(0, 2), script=st.lists(st.tuples(EVENTS, ROSTERS), max_size=30), first=ROSTERS)
def test_properties_of_any_scheduled_walk(cycles: int, script: list, first: dict) -> None:
    """Whoever is on call at each step: a leg pages exactly what it announced, only people it may
    page, and a leg with nobody to page passes at once."""
    walk, cmds = decide(w.new("inc-1", scheduled_plan(cycles)), Open(), T0, first)
    t = T0
    steps = [(cmds, first)]
    for step, roster in script:
        t += timedelta(seconds=7)
        if step == "expire":
            walk, cmds = decide(walk, WindowExpired(walk.cycle, walk.leg_index), t, roster)
        elif step in ("pass", "late-pass"):
            walk, cmds = decide(walk, Pass("ops"), t, roster)
        elif step == "ack":
            walk, cmds = decide(walk, Acknowledge("ops"), t, roster)
        elif step == "resolve":
            walk, cmds = decide(walk, Resolve("ops"), t, roster)
        elif walk.live:
            key = sorted(walk.live)[0]
            contact, channel = key.split(".")[2:]
            page = PageCmd(key, contact, channel, walk.cycle, walk.leg_index, walk.leg.name, walk.leg.window_s)
            walk, cmds = decide(walk, PageFailed(page, "x") if step == "fail" else PageSent(page), t, roster)
        else:
            continue
        steps.append((cmds, roster))
        assert all(k.startswith(f"c{walk.cycle}.l{walk.leg_index}.") for k in walk.live)
        assert (walk.deadline is not None) == (walk.status == "open")
        again = w.Walk.from_dict("inc-1", walk.plan, walk.to_dict())
        assert again == walk
    for cmds, roster in steps:
        emitted = [c for c in cmds if isinstance(c, Emit)]
        for i, e in enumerate(emitted):
            if e.event != "leg_started":
                continue
            leg = scheduled_plan().legs[e.fields["leg_index"]]
            paged = [c for c in cmds if isinstance(c, PageCmd) and c.leg_index == e.fields["leg_index"] and c.key.startswith("c")]
            assert list(dict.fromkeys(p.contact for p in paged)) == e.fields["contacts"]
            allowed = {c for c, _ in leg.targets} | {r.contact for s in leg.schedules for r in roster.get(s, ())}
            assert set(e.fields["contacts"]) <= allowed
            if not e.fields["contacts"]:  # nobody: passes at once
                assert emitted[i + 1].event == "passed" and emitted[i + 1].fields["reason"] in (w.NOBODY_ON_CALL, w.UNREACHABLE)
