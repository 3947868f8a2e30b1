"""The ladder walk as a pure state machine (SPEC §4), in the style of h11: everything that affects
the walk lives here.

    decide(walk, event, now) -> (walk, commands)

No I/O, no clock reads, no imports beyond the standard library: time arrives as an argument, and
everything the outside world must do comes back as commands (page, arm or cancel the window, stop
pages in flight, record a page's outcome, emit an event, notify). The daemon is a thin shell that
records the result in one transaction and then carries the commands out. An event that changes
nothing returns exactly one command, `Ignored`, with the reason (callers answer people from it).

Invariants (checked by the property tests in tests/test_walk.py):
- `deadline` is set exactly while the walk is `open`, or `acknowledged` with an expiring
  acknowledgement (SPEC §11): one timer per incident whatever it times (each `ArmWindow` replaces
  the last; leaving both cancels it), so there are never two live timers.
- `live` holds only keys of the current leg's pages while `open`, only the reminder's pages while
  the acker is being reminded, and is empty otherwise.
- `seq` counts every emitted event of the incident: 1, 2, 3 … without gaps.
- `paged` only grows; `resolved` is final; `acknowledged` goes back to walking only through
  `ack_expired`, and only when the ladder's `ack_expires` is set.
- After an acknowledgement nothing is paged but the acker's reminder; after a resolve, nothing.

Rules, each a unit test in tests/test_walk.py:
- Starting a leg pages every target (contact × channel) of the leg and arms its window. Which
  channels can reach a contact (`reachable`) is decided here too: voice and SMS need a phone, push
  needs a push token.
- A scheduled leg (SPEC §10) pages its fixed contacts, then whoever is on call on its schedules at
  the instant it starts: the shell passes that as data (`on_call`, asked for by `needs_on_call`),
  the walk never computes it. `leg_started` names the contacts paged and the schedules. A leg that
  resolves to nobody it can reach passes at once with reason `nobody on call`.
- Exhaustion pages everyone paged on each leg so far plus whoever is on call on each scheduled
  leg at that moment.
- Window expiry ends the leg (`leg_timed_out`) and starts the next; after the last leg a new cycle
  starts while `cycles` is 0 or not yet reached; otherwise the walk is `exhausted`: everyone on
  the ladder is paged at once and the incident stays open for acknowledgment. A window of a leg
  that already ended is ignored.
- The first acknowledgement wins: from anyone paged so far, or from an operator (no contact);
  pages still in flight are stopped (`StopPages`) and the others paged get a short notice.
- A pass ends the current leg now. A pass tied to an older leg (a late key press), or by someone
  not on the current leg, changes nothing.
- A page's outcome is recorded once: the same outcome again (a retry after an unclear commit)
  changes nothing, and a failure reported first (a fast status callback) stays failed when the
  provider's acceptance arrives after it.
- When every page of the current leg has definitively failed, the next leg starts at once. The
  one exception: an unreachable *last* leg does not start a new cycle early; the window does, so
  a total outage pages once per window instead of spinning through the ladder.
- Resolve stops everything (an acknowledgement's timer and reminder too). Acks and passes after an
  incident is closed change nothing.
- Acknowledgements expire (SPEC §11) when the plan has `ack_expires_s` and the acker is a contact
  that was paged: the acknowledgement arms a timer of `ack_expires_s`. When it runs out the acker
  alone is reminded on the channels of the leg they were paged on (pages keyed `r<n>.…`), with the
  first leg's window to answer. An acknowledgement by the acker at any time while the timer runs is
  `ack_renewed` and restarts it (a reminder in flight is stopped); anyone else's changes nothing,
  and so does the acker's within RENEW_QUIET_S (a tenth of `ack_expires` at most) of the timer being
  armed while no reminder is out: that is a repeat (a redelivery, an app's retry), not a renewal.
  No answer within the window, or a reminder that reached nobody: `ack_expired` (`by` the previous
  acker), the incident is open again and a new cycle starts at the first leg — the `cycles` limit
  still counts. An acknowledgement without a contact counts as its `by` when that is a contact
  paged for the incident (an app gateway over NATS); an operator's has nobody to remind and never expires.
  The timer's identity is `(cycle, ACK_TIMER + n)`, n counting the timers armed: a timer that fired
  while a renewal was being decided is stale and changes nothing.
- A leg that ends (window, pass) or an incident that is taken or resolved stops its calls still
  queued or ringing (`CancelCalls`); a call the provider accepts only after its leg ended is
  stopped as soon as it is known.
- A message refused for an existing incident is recorded in its timeline (`rejected`, next seq).
- Connecting the acker to the caller (SPEC §11) is `caller_connected`; only the acker of an
  acknowledged incident whose ladder offers it may ask, and it changes nothing else (the shell
  has checked the incident has a caller and dials them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

NEW = "new"
OPEN = "open"
EXHAUSTED = "exhausted"
ACKNOWLEDGED = "acknowledged"
RESOLVED = "resolved"
ACTIVE = (OPEN, EXHAUSTED)  # still waiting for somebody to take it

# Pages: what is sent on, and what each page's row says happened to it.
VOICE, SMS, PUSH = "voice", "sms", "push"
CHANNELS = (VOICE, SMS, PUSH)
NATS = "nats"  # acknowledgements and passes that arrive as NATS messages (an app gateway, the CLI)
PAGE_PENDING, PAGE_SENT, PAGE_FAILED, PAGE_ABANDONED = "pending", "sent", "failed", "abandoned"

# Why an event changed nothing (Ignored.kind): what the caller tells the person who sent it.
TAKEN = "taken"  # somebody already acknowledged it
CLOSED = "closed"  # resolved
NOT_PAGED = "not_paged"  # this contact was never paged for the incident
NOT_THIS_LEG = "not_this_leg"  # a pass from someone not on the current leg
STALE = "stale"  # a window or a pass of a leg that is already over
NOTHING_TO_PASS = "nothing_to_pass"  # the ladder is exhausted
REPEAT = "repeat"  # the same thing again (an opening, a page's outcome)

# Why a leg passed without anyone passing it.
UNREACHABLE = "unreachable: every page of the leg failed"
NOBODY_ON_CALL = "nobody on call"
NOT_CONFIRMED = "the acker did not confirm within the first leg's window"
REMINDER_UNREACHABLE = "the reminder reached nobody: every page of it failed"

# An acknowledgement's timer is told from a leg's window by its slot: ACK_TIMER + n (n counts the
# incident's acknowledgement timers) is above any leg index, so a walk's timers only ever move
# forward in (cycle, slot) order, as Windows.arm(only_if_newer=True) expects.
ACK_TIMER = 1_000_000
RENEW_QUIET_S = 60.0  # an acker's acknowledgement this soon after their timer was armed is a repeat, not a renewal


def driven(status: str, timed: bool) -> bool:
    """Does an incident still need a replica to drive it: walking, or acknowledged with a timer
    (an expiring acknowledgement, SPEC §11)?"""
    return status in ACTIVE or (status == ACKNOWLEDGED and timed)


def reachable(channel: str, has_phone: bool, has_push: bool) -> bool:
    """Can a contact be paged on this channel at all? Voice and SMS need a phone; push a token."""
    return has_phone if channel in (VOICE, SMS) else has_push if channel == PUSH else False


# -- the plan: what to walk, fixed when the incident opens -----------------------------------------


Target = tuple[str, str]  # (contact id, channel)


@dataclass(frozen=True)
class Reach:
    """Someone on call, as the shell found them: can they be reached by phone, by push?"""

    contact: str
    phone: bool
    push: bool


# Who is on call on each schedule a plan names, at the instant of a decision (escalator.oncall).
OnCall = dict[str, tuple[Reach, ...]]


@dataclass(frozen=True)
class LegPlan:
    name: str
    window_s: float
    targets: tuple[Target, ...]  # the fixed contacts' (contact id, channel), in the order pages go out
    schedules: tuple[str, ...] = ()  # whoever is on call on these when the leg starts is paged too
    channels: tuple[str, ...] = ()  # how the people on call are paged (a scheduled leg's channels)

    @property
    def contacts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for c, _ in self.targets))

    def resolve(self, on_call: OnCall | None) -> tuple[Target, ...]:
        """The fixed targets, then each person on call on the leg's schedules (in schedule order) on
        every channel of the leg that can reach them."""
        if not self.schedules:
            return self.targets
        if on_call is None:
            raise ValueError(f"leg {self.name!r} is scheduled: the shell must say who is on call (needs_on_call)")
        out = dict.fromkeys(self.targets)
        for schedule in self.schedules:
            for person in on_call.get(schedule, ()):
                out.update(dict.fromkeys((person.contact, ch) for ch in self.channels if reachable(ch, person.phone, person.push)))
        return tuple(out)


@dataclass(frozen=True)
class Plan:
    ladder: str
    version: int
    cycles: int  # 0 = walk until acknowledged
    legs: tuple[LegPlan, ...]
    ack_expires_s: float | None = None  # SPEC §11: an acknowledgement not confirmed within this expires
    connect_caller: bool = True  # SPEC §11: offer the acker a call to the incident's caller

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ladder": self.ladder,
            "version": self.version,
            "cycles": self.cycles,
            "legs": [_leg_dict(leg) for leg in self.legs],
        }
        if self.ack_expires_s is not None:
            out["ack_expires_s"] = self.ack_expires_s
        if not self.connect_caller:
            out["connect_caller"] = False
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        legs = tuple(
            LegPlan(
                leg["name"], leg["window_s"], tuple((c, ch) for c, ch in leg["targets"]),
                tuple(leg.get("schedules", ())), tuple(leg.get("channels", ())),
            )
            for leg in data["legs"]
        )
        return cls(data["ladder"], int(data["version"]), int(data["cycles"]), legs, data.get("ack_expires_s"),
                   bool(data.get("connect_caller", True)))

    @property
    def schedules(self) -> frozenset[str]:
        return frozenset(s for leg in self.legs for s in leg.schedules)


def _leg_dict(leg: LegPlan) -> dict[str, Any]:
    out: dict[str, Any] = {"name": leg.name, "window_s": leg.window_s, "targets": [list(t) for t in leg.targets]}
    if leg.schedules:
        out["schedules"], out["channels"] = list(leg.schedules), list(leg.channels)
    return out


# -- events: what happened --------------------------------------------------------------------------


@dataclass(frozen=True)
class Open:
    """Start the walk. `details` go into the `opened` event (ladder asked for, fallback, summary…)."""

    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowExpired:
    cycle: int
    leg_index: int


@dataclass(frozen=True)
class Acknowledge:
    by: str
    channel: str | None = None  # voice, sms, push, or None for an operator / API
    contact: str | None = None  # the contact acknowledging, when known; must have been paged


@dataclass(frozen=True)
class Pass:
    by: str
    channel: str | None = None
    contact: str | None = None
    cycle: int | None = None  # the leg the pass was given for, when known (a key press on a page)
    leg_index: int | None = None


@dataclass(frozen=True)
class Recorded:
    """What a page's row says so far, as the shell read it (the walk keeps no page rows)."""

    status: str
    ref: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class PageSent:
    page: PageCmd
    ref: str | None = None  # the provider's id for the page
    recorded: Recorded | None = None  # the page's row before this outcome (None: no row)


@dataclass(frozen=True)
class PageFailed:
    page: PageCmd
    reason: str
    recorded: Recorded | None = None


@dataclass(frozen=True)
class Resolve:
    by: str | None = None


@dataclass(frozen=True)
class ConnectCaller:
    """The acker asked to be put through to the incident's caller (SPEC §11)."""

    by: str
    contact: str | None = None


NO_CALL = "no_call"  # connecting to the caller: the ladder does not offer it, or nobody acknowledged yet


@dataclass(frozen=True)
class Reject:
    """A message about this incident was refused (e.g. could not be processed)."""

    reason: str


Event = Open | WindowExpired | Acknowledge | Pass | PageSent | PageFailed | Resolve | Reject | ConnectCaller


# -- commands: what the shell must do ---------------------------------------------------------------


@dataclass(frozen=True)
class PageCmd:
    """Page one contact on one channel. `key` is unique within the incident."""

    key: str
    contact: str
    channel: str
    cycle: int
    leg_index: int
    leg: str
    window_s: float  # how long this page has to matter (bounds provider retries)


@dataclass(frozen=True)
class ArmWindow:
    deadline: datetime
    cycle: int
    leg_index: int


@dataclass(frozen=True)
class CancelWindow:
    pass


@dataclass(frozen=True)
class Emit:
    """An event for the timeline and `escalations.<event>`; `seq` counts 1, 2, 3… per incident."""

    event: str
    seq: int
    at: datetime
    fields: dict[str, Any]


@dataclass(frozen=True)
class Notify:
    """A short notice to someone already paged, e.g. that another person took the incident."""

    contact: str
    kind: str
    by: str


@dataclass(frozen=True)
class StopPages:
    """Pages still being sent for this incident must stop: nobody may be rung after this."""


@dataclass(frozen=True)
class CancelCalls:
    """Calls that may still be queued at the provider or ringing, whose leg is over (or whose
    incident was taken): stop them. `keys` name pages (the shell finds their calls); `refs` are
    calls already known by the provider's id."""

    keys: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetPage:
    """Record a page's outcome on its row."""

    key: str
    status: str
    ref: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Ignored:
    """The event changed nothing. `kind` is one of the reasons above; `reason` says it in words;
    `by` names who has the incident when it was already taken; `noteworthy`: worth a line in the
    incident's timeline (something a person or a publisher did, not a timer or a provider)."""

    kind: str
    reason: str
    by: str | None = None
    noteworthy: bool = True


Command = PageCmd | ArmWindow | CancelWindow | Emit | Notify | StopPages | CancelCalls | SetPage | Ignored


# -- the state ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Walk:
    incident_id: str
    plan: Plan
    status: str = NEW
    cycle: int = 0
    leg_index: int = 0
    deadline: datetime | None = None
    live: frozenset[str] = frozenset()  # keys of the current leg's pages not yet definitively failed
    paged: frozenset[str] = frozenset()  # every contact paged so far
    seq: int = 0
    acked_by: str | None = None
    closed_by: str | None = None
    # Scheduled legs only: the current leg's targets as resolved when it started, and per leg index
    # every target it has paged so far (for exhaustion and for stopping its calls).
    on_leg: tuple[Target, ...] | None = None
    resolved: tuple[tuple[int, tuple[Target, ...]], ...] = ()
    # An expiring acknowledgement (SPEC §11): the acker's targets (who a reminder pages, and how;
    # empty: the acknowledgement does not expire), how many timers it has armed, and whether the
    # acker is being reminded now.
    acker: tuple[Target, ...] = ()
    ack_timer: int = 0
    reminding: bool = False

    @property
    def leg(self) -> LegPlan:
        return self.plan.legs[self.leg_index]

    @property
    def targets(self) -> tuple[Target, ...]:
        """The current leg's targets."""
        return self.leg.targets if self.on_leg is None else self.on_leg

    def paged_on(self, leg_index: int) -> tuple[Target, ...]:
        """Everything a leg has paged (its fixed targets when it is not scheduled)."""
        found = dict(self.resolved).get(leg_index)
        return self.plan.legs[leg_index].targets if found is None else found

    def to_dict(self) -> dict[str, Any]:
        """The state without the plan (stored once, beside it)."""
        return {
            "status": self.status,
            "cycle": self.cycle,
            "leg_index": self.leg_index,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "live": sorted(self.live),
            "paged": sorted(self.paged),
            "seq": self.seq,
            "acked_by": self.acked_by,
            "closed_by": self.closed_by,
            **({"on_leg": [list(t) for t in self.on_leg]} if self.on_leg is not None else {}),
            **({"resolved": {str(i): [list(t) for t in ts] for i, ts in self.resolved}} if self.resolved else {}),
            **({"acker": [list(t) for t in self.acker]} if self.acker else {}),
            **({"ack_timer": self.ack_timer} if self.ack_timer else {}),
            **({"reminding": True} if self.reminding else {}),
        }

    @property
    def window(self) -> tuple[int, int] | None:
        """The identity of the armed timer (what `WindowExpired` must name), None when none is."""
        if self.deadline is None:
            return None
        return (self.cycle, ACK_TIMER + self.ack_timer) if self.status == ACKNOWLEDGED else (self.cycle, self.leg_index)

    @classmethod
    def from_dict(cls, incident_id: str, plan: Plan, data: dict[str, Any]) -> Walk:
        return cls(
            incident_id=incident_id,
            plan=plan,
            status=data["status"],
            cycle=int(data["cycle"]),
            leg_index=int(data["leg_index"]),
            deadline=datetime.fromisoformat(data["deadline"]) if data.get("deadline") else None,
            live=frozenset(data.get("live", ())),
            paged=frozenset(data.get("paged", ())),
            seq=int(data["seq"]),
            acked_by=data.get("acked_by"),
            closed_by=data.get("closed_by"),
            on_leg=tuple((c, ch) for c, ch in data["on_leg"]) if data.get("on_leg") is not None else None,
            resolved=tuple(sorted((int(i), tuple((c, ch) for c, ch in ts)) for i, ts in (data.get("resolved") or {}).items())),
            acker=tuple((c, ch) for c, ch in data.get("acker", ())),
            ack_timer=int(data.get("ack_timer", 0)),
            reminding=bool(data.get("reminding", False)),
        )


# -- the machine -------------------------------------------------------------------------------------


class _Step:
    """Collects the new state and the commands of one decision."""

    def __init__(self, walk: Walk, now: datetime, on_call: OnCall | None):
        self.walk = walk
        self.now = now
        self.on_call = on_call
        self.commands: list[Command] = []

    def set(self, **changes: Any) -> None:
        self.walk = replace(self.walk, **changes)

    def emit(self, event: str, **fields: Any) -> None:
        seq = self.walk.seq + 1
        self.set(seq=seq)
        self.commands.append(Emit(event, seq, self.now, {k: v for k, v in fields.items() if v is not None}))

    def leg_fields(self) -> dict[str, Any]:
        w = self.walk
        return {"cycle": w.cycle, "leg": w.leg.name, "leg_index": w.leg_index}

    def start_leg(self, cycle: int, leg_index: int) -> None:
        leg = self.walk.plan.legs[leg_index]
        deadline = self.now + timedelta(seconds=leg.window_s)
        targets = leg.resolve(self.on_call)
        pages = [
            PageCmd(page_key(cycle, leg_index, contact, channel), contact, channel, cycle, leg_index, leg.name, leg.window_s)
            for contact, channel in targets
        ]
        self.set(
            status=OPEN,
            cycle=cycle,
            leg_index=leg_index,
            deadline=deadline,
            live=frozenset(p.key for p in pages),
            paged=self.walk.paged | {p.contact for p in pages},
            on_leg=targets if leg.schedules else None,
        )
        if leg.schedules:
            self.remember(leg_index, targets)
        contacts = list(dict.fromkeys(c for c, _ in targets))
        self.emit("leg_started", **self.leg_fields(), window_s=leg.window_s, contacts=contacts, schedules=list(leg.schedules) or None)
        self.commands.extend(pages)
        self.commands.append(ArmWindow(deadline, cycle, leg_index))
        if not pages:  # nobody on this leg can be reached on its channels
            self.unreachable(NOBODY_ON_CALL if leg.schedules else UNREACHABLE)

    def remember(self, leg_index: int, targets: tuple[Target, ...]) -> None:
        """Add to what a scheduled leg has paged during this incident."""
        resolved = dict(self.walk.resolved)
        resolved[leg_index] = tuple(dict.fromkeys(resolved.get(leg_index, ()) + targets))
        self.set(resolved=tuple(sorted(resolved.items())))

    def advance(self, early: bool = False) -> None:
        """The current leg is over: next leg, next cycle, or exhaustion."""
        w = self.walk
        if w.leg_index + 1 < len(w.plan.legs):
            self.start_leg(w.cycle, w.leg_index + 1)
        elif w.plan.cycles == 0 or w.cycle < w.plan.cycles:
            if early:
                return  # a whole unreachable cycle: let the armed window start the next one
            self.start_leg(w.cycle + 1, 0)
        else:
            self.exhaust()

    def cancel_calls(self) -> None:
        """The calls of the leg now ending (or of the exhaustion) may still be queued at the provider
        or ringing: they are stopped, so no phone rings for a leg that is over."""
        w = self.walk
        if w.status == OPEN:
            keys = [page_key(w.cycle, w.leg_index, c, VOICE) for c, channel in w.targets if channel == VOICE]
        elif w.status == EXHAUSTED:
            keys = [exhaustion_key(w.cycle, c, VOICE) for i in range(len(w.plan.legs)) for c, channel in w.paged_on(i) if channel == VOICE]
        elif w.status == ACKNOWLEDGED and w.reminding:
            keys = [reminder_key(w.ack_timer, c, VOICE) for c, channel in w.acker if channel == VOICE]
        else:
            return
        if keys:
            self.commands.append(CancelCalls(tuple(dict.fromkeys(keys))))

    def unreachable(self, reason: str = UNREACHABLE) -> None:
        self.emit("passed", **self.leg_fields(), reason=reason)
        self.advance(early=True)

    # -- an expiring acknowledgement (SPEC §11) --

    def arm_ack_timer(self, seconds: float, reminding: bool = False) -> None:
        n = self.walk.ack_timer + 1
        deadline = self.now + timedelta(seconds=seconds)
        self.set(ack_timer=n, deadline=deadline, reminding=reminding, live=frozenset())
        self.commands.append(ArmWindow(deadline, self.walk.cycle, ACK_TIMER + n))

    def remind(self) -> None:
        """The acknowledgement's time is up: the acker alone is asked to confirm, within the first leg's window."""
        first = self.walk.plan.legs[0]
        self.arm_ack_timer(first.window_s, reminding=True)
        w = self.walk
        pages = [
            PageCmd(reminder_key(w.ack_timer, contact, channel), contact, channel, w.cycle, w.leg_index, w.leg.name, first.window_s)
            for contact, channel in w.acker
        ]
        self.set(live=frozenset(p.key for p in pages))
        self.commands.extend(pages)

    def expire_ack(self, reason: str) -> None:
        """No confirmation: the incident is open again and the walk starts a new cycle at the first leg."""
        w = self.walk
        self.cancel_calls()
        self.commands.append(StopPages())
        self.set(acked_by=None, acker=(), reminding=False, live=frozenset(), deadline=None)
        self.emit("ack_expired", by=w.acked_by, contact=w.acker[0][0] if w.acker else None, cycle=w.cycle, reason=reason)
        self.start_leg(w.cycle + 1, 0)

    def acker_targets(self, contact: str | None) -> tuple[Target, ...]:
        """How a reminder reaches the acker: the channels of the latest leg they were paged on (all
        the legs' channels once the ladder is exhausted). None for an operator: nobody to remind."""
        w = self.walk
        if contact is None or w.plan.ack_expires_s is None:
            return ()
        if w.status == EXHAUSTED:
            return tuple(dict.fromkeys(t for i in range(len(w.plan.legs)) for t in w.paged_on(i) if t[0] == contact))
        # the legs in the order they were last paged, latest first: this cycle's down to the first,
        # then (from the second cycle on) the previous cycle's later legs
        later = range(len(w.plan.legs) - 1, w.leg_index, -1) if w.cycle > 1 else range(0)
        reached = [*range(w.leg_index, -1, -1), *later]
        if contact in {c for c, _ in w.targets}:
            return tuple(t for t in w.targets if t[0] == contact)
        for index in reached:
            mine = tuple(t for t in w.paged_on(index) if t[0] == contact)
            if mine:
                return mine
        return ()

    def exhaust(self) -> None:
        self.set(status=EXHAUSTED, deadline=None, live=frozenset(), on_leg=None)
        self.commands.append(CancelWindow())
        self.emit("exhausted", cycle=self.walk.cycle)
        for index, leg in enumerate(self.walk.plan.legs):  # who is on call now joins who was paged
            if leg.schedules:
                self.remember(index, leg.resolve(self.on_call))
        w = self.walk
        seen: set[Target] = set()
        pages = []
        for index, leg in enumerate(w.plan.legs):
            for contact, channel in w.paged_on(index):
                if (contact, channel) not in seen:
                    seen.add((contact, channel))
                    pages.append(PageCmd(exhaustion_key(w.cycle, contact, channel), contact, channel, w.cycle, index, leg.name, leg.window_s))
        self.set(paged=w.paged | {p.contact for p in pages})
        self.commands.extend(pages)


def new(incident_id: str, plan: Plan) -> Walk:
    return Walk(incident_id=incident_id, plan=plan)


def page_key(cycle: int, leg_index: int, contact: str, channel: str) -> str:
    return f"c{cycle}.l{leg_index}.{contact}.{channel}"


def exhaustion_key(cycle: int, contact: str, channel: str) -> str:
    """An exhaustion's page. The cycle is in it: after an expired acknowledgement a walk can be
    exhausted again, and every page of an incident has a key of its own."""
    return f"x{cycle}.{contact}.{channel}"



def reminder_key(n: int, contact: str, channel: str) -> str:
    return f"r{n}.{contact}.{channel}"


def is_reminder(key: str) -> bool:
    """A page asking the acker to confirm an expiring acknowledgement (SPEC §11)."""
    return key.startswith("r")


def is_current(walk: Walk, key: str) -> bool:
    """Does this page still matter: one of the current leg's (or the reminder's) live pages, or an
    exhaustion page while the walk is exhausted? (A page interrupted by a crash is re-sent only if so.)"""
    return key in walk.live or (walk.status == EXHAUSTED and key.startswith(f"x{walk.cycle}."))


def _by_acker(walk: Walk, event: Acknowledge) -> bool:
    """Is this acknowledgement the acker confirming? Their own page (any channel), or an operator
    acknowledging in their name."""
    acker = walk.acker[0][0] if walk.acker else None
    return event.contact == acker if event.contact is not None else event.by == walk.acked_by


def _closed(walk: Walk) -> Ignored:
    if walk.status == ACKNOWLEDGED:
        return Ignored(TAKEN, f"already acknowledged by {walk.acked_by}", by=walk.acked_by)
    return Ignored(CLOSED, "already resolved")


def needs_on_call(walk: Walk, event: Event) -> frozenset[str]:
    """The schedules whose on-call people `decide` needs for this event: those of the plan when the
    event may start a leg or exhaust the ladder, else none (most events need no lookup)."""
    if not walk.plan.schedules:
        return frozenset()
    if isinstance(event, (Open, WindowExpired, Pass)):
        return walk.plan.schedules
    if isinstance(event, PageFailed) and walk.live == {event.page.key}:
        return walk.plan.schedules
    return frozenset()


def decide(walk: Walk, event: Event, now: datetime, on_call: OnCall | None = None) -> tuple[Walk, list[Command]]:
    """The next state and the commands to carry out; an event that changes nothing: `[Ignored(…)]`.
    `on_call`: who is on call at `now` on the schedules `needs_on_call` names."""
    step = _Step(walk, now, on_call)
    status = walk.status

    if isinstance(event, Open):
        if status != NEW:
            return walk, [Ignored(REPEAT, f"already opened (incident is {status})")]
        plan = walk.plan
        step.emit("opened", ladder=plan.ladder, version=plan.version, **event.details)
        if not any(leg.targets or leg.schedules for leg in plan.legs):
            step.set(cycle=1)
            step.exhaust()
        else:
            step.start_leg(1, 0)

    elif isinstance(event, WindowExpired):
        if walk.window != (event.cycle, event.leg_index):
            return walk, [Ignored(STALE, "a stale window: that leg (or that acknowledgement's timer) already ended", noteworthy=False)]
        if status == ACKNOWLEDGED and not walk.reminding:
            step.remind()
        elif status == ACKNOWLEDGED:
            step.expire_ack(NOT_CONFIRMED)
        else:
            step.emit("leg_timed_out", **step.leg_fields())
            step.cancel_calls()
            step.advance()

    elif isinstance(event, Acknowledge):
        if status == ACKNOWLEDGED and walk.deadline is not None and _by_acker(walk, event):
            expires = walk.plan.ack_expires_s
            assert expires is not None  # a timer runs only with ack_expires
            if not walk.reminding and now < walk.deadline - timedelta(seconds=expires - min(RENEW_QUIET_S, expires / 10)):
                # moments after the timer was armed: a repeat (a redelivery, an app's retry), not a renewal
                return walk, [Ignored(TAKEN, f"already acknowledged by {walk.acked_by}", by=walk.acked_by)]
            step.cancel_calls()
            step.commands.append(StopPages())
            step.arm_ack_timer(walk.plan.ack_expires_s)
            step.emit("ack_renewed", by=event.by, channel=event.channel, contact=event.contact, cycle=walk.cycle)
            return step.walk, step.commands
        if status not in ACTIVE:
            return walk, [_closed(walk)]
        if event.contact is not None and event.contact not in walk.paged:
            return walk, [Ignored(NOT_PAGED, f"{event.contact} was not paged for this incident")]
        step.cancel_calls()
        # An acknowledgement over NATS names its contact in `by` (an app gateway): remind them if paged.
        acker = step.acker_targets(event.contact or (event.by if event.by in walk.paged else None))
        step.set(status=ACKNOWLEDGED, acked_by=event.by, deadline=None, live=frozenset(), on_leg=None, acker=acker)
        step.commands += [CancelWindow(), StopPages()]
        if acker:
            assert walk.plan.ack_expires_s is not None
            step.arm_ack_timer(walk.plan.ack_expires_s)
        step.emit("acknowledged", by=event.by, channel=event.channel, contact=event.contact, **step.leg_fields())
        step.commands.extend(Notify(c, "taken", event.by) for c in sorted(walk.paged) if c not in (event.contact, event.by))

    elif isinstance(event, Pass):
        if status in (ACKNOWLEDGED, RESOLVED):
            return walk, [_closed(walk)]
        if status != OPEN:
            return walk, [Ignored(NOTHING_TO_PASS, "every leg has been paged: there is nobody to pass it to")]
        if event.cycle is not None and (event.cycle, event.leg_index) != (walk.cycle, walk.leg_index):
            return walk, [Ignored(STALE, "that leg is already over")]
        if event.contact is not None and event.contact not in {c for c, _ in walk.targets}:
            return walk, [Ignored(NOT_THIS_LEG, f"{event.contact} is not on the current leg ({walk.leg.name})")]
        step.emit("passed", by=event.by, channel=event.channel, contact=event.contact, **step.leg_fields())
        step.cancel_calls()
        step.advance()

    elif isinstance(event, PageSent):
        page, recorded = event.page, event.recorded
        if recorded is not None and recorded.status == PAGE_SENT and recorded.ref == event.ref:
            return walk, [Ignored(REPEAT, "the same outcome again", noteworthy=False)]
        if recorded is not None:  # a failure reported first (a fast status callback) stays failed
            kept = PAGE_SENT if recorded.status == PAGE_PENDING else recorded.status
            step.commands.append(SetPage(page.key, kept, event.ref, recorded.reason))
        step.emit("page_sent", contact=page.contact, channel=page.channel, cycle=page.cycle, leg=page.leg, leg_index=page.leg_index)
        if page.channel == VOICE and event.ref and not is_current(walk, page.key):
            step.commands.append(CancelCalls(refs=(event.ref,)))  # placed after its leg ended: stop it ringing

    elif isinstance(event, PageFailed):
        page, recorded = event.page, event.recorded
        if recorded is not None and recorded.status == PAGE_FAILED and recorded.reason == event.reason:
            return walk, [Ignored(REPEAT, "the same outcome again", noteworthy=False)]
        if recorded is not None:
            step.commands.append(SetPage(page.key, PAGE_FAILED, recorded.ref, event.reason))
        step.emit(
            "page_failed", contact=page.contact, channel=page.channel, cycle=page.cycle, leg=page.leg,
            leg_index=page.leg_index, reason=event.reason,
        )
        if status in (OPEN, ACKNOWLEDGED) and page.key in walk.live:
            step.set(live=walk.live - {page.key})
            if not step.walk.live and status == OPEN:
                step.unreachable()
            elif not step.walk.live:
                step.expire_ack(REMINDER_UNREACHABLE)

    elif isinstance(event, Resolve):
        if status not in (*ACTIVE, ACKNOWLEDGED):
            return walk, [Ignored(CLOSED, "already resolved")]
        step.cancel_calls()
        step.set(status=RESOLVED, closed_by=event.by, deadline=None, live=frozenset(), on_leg=None, reminding=False)
        step.commands += [CancelWindow(), StopPages()]
        step.emit("resolved", by=event.by)

    elif isinstance(event, Reject):
        step.emit("rejected", reason=event.reason)

    elif isinstance(event, ConnectCaller):
        if status == RESOLVED:
            return walk, [_closed(walk)]
        if status != ACKNOWLEDGED:
            return walk, [Ignored(NO_CALL, "nobody has taken the incident yet")]
        if not walk.plan.connect_caller:
            return walk, [Ignored(NO_CALL, "this ladder does not offer a call to the caller")]
        if event.by != walk.acked_by:
            return walk, [Ignored(TAKEN, f"already acknowledged by {walk.acked_by}", by=walk.acked_by)]
        step.emit("caller_connected", by=event.by, contact=event.contact, channel=VOICE)

    else:  # pragma: no cover - the type union is closed
        raise TypeError(f"unknown event {event!r}")

    return step.walk, step.commands


def ignored(commands: list[Command]) -> Ignored | None:
    """The reason a decision changed nothing, or None when it changed something."""
    if len(commands) == 1 and isinstance(commands[0], Ignored):
        return commands[0]
    return None


def describe(event: Event) -> str:
    """An event in a few words, for the timeline's notes ("acknowledgement by alice over sms")."""
    if isinstance(event, (Acknowledge, Pass)):
        verb = "acknowledgement" if isinstance(event, Acknowledge) else "pass"
        how = {VOICE: "by key press", SMS: "over SMS", PUSH: "from the app", NATS: "over NATS"}.get(event.channel or "", "by an operator")
        return f"{verb} by {event.by} {how}"
    if isinstance(event, Resolve):
        return f"resolve by {event.by or 'someone'}"
    if isinstance(event, ConnectCaller):
        return f"request by {event.by} to be connected to the caller"
    if isinstance(event, Open):
        return "repeated urgent message"
    return type(event).__name__
