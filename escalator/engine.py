"""The shell around the walk: record each decision, then carry out its commands.

Every step runs the pure walk inside one database transaction (escalator.store.incidents, written by
escalator.store.group_commit); only after it commits are windows armed or cancelled, pages sent and
events handed to the outbox. Steps for one incident are serialised in this process by a lock; the
database row lock does the same across processes. Pages run as their own tasks, bounded by the
leg's window, so a hung provider can never delay a window or another incident.

Acknowledgements and passes, whatever they come through (a key press, an SMS reply, the app, NATS,
the CLI over NATS), go through one call each: `acknowledge` and `pass_on`, which answer with a
typed `Answer` the caller turns into words for the person.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from escalator import clock, walk
from escalator.answers import ACKNOWLEDGED, CONNECTED, PASSED, RENEWED, RESOLVED, UNKNOWN, Answer
from escalator.channels import OPTED_OUT, Channel, Outcome, Page
from escalator.logs import incident_var, mask_phone
from escalator.metrics import Metrics
from escalator.store import opt_outs
from escalator.store.group_commit import GroupCommit
from escalator.store.incidents import IncidentStore, NewIncident, StepResult
from escalator.walk import ArmWindow, CancelCalls, CancelWindow, Emit, Event, Notify, PageCmd, PageFailed, PageSent, StopPages
from escalator.windows import Windows

log = logging.getLogger("escalator.engine")

NOTICES = {"taken": "Incident {incident} was taken by {by}. No action needed."}
BACKSTOP_S = 1.0  # how long after its window a page still in its channel is cut off

@dataclass
class PageInFlight:
    """One page being sent by this process, from the step that decided it until its outcome is recorded."""

    incident_id: str
    key: str
    task: asyncio.Task[Any] | None = None
    answered: bool = False  # the provider has answered: stopping it now changes nothing
    stopped: bool = False  # cancelled because the incident was taken or resolved


class Engine:
    def __init__(
        self,
        store: IncidentStore,
        channels: Mapping[str, Channel],
        metrics: Metrics,
        default_ladder: str | None = None,
        on_events: Callable[[], None] = lambda: None,
        now: Callable[[], datetime] = clock.now,
    ):
        self.store = store
        self.channels = channels
        self.metrics = metrics
        self.default_ladder = default_ladder
        self.on_events = on_events  # wakes the outbox publisher
        self.now = now
        self.windows = Windows(self.window_expired, now=now, spawn=self._spawn)
        self.steps = GroupCommit(store.engine, on_uncertain=self._uncertain)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pages: dict[tuple[str, str], PageInFlight] = {}  # (incident, page key) → the page being sent here
        self.owned: set[str] = set()  # incidents this replica drives (escalator.lease_keeper)
        self._outcomes: dict[str, _Outcomes] = {}  # page outcomes waiting to be recorded together
        self._stopped = False  # timers stopped: what is left is the next owner's, from the database

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        self.windows.start()

    async def stop(self, grace: float = 5.0) -> None:
        """Give work in flight `grace` seconds, windows still firing meanwhile (a window due during a
        shutdown must not wait for the next owner); then stop the timers and cancel what is left,
        which stays pending in the database for the replica that takes over."""
        deadline = asyncio.get_running_loop().time() + grace
        while self._tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=left)
        self.windows.shutdown()
        self._stopped = True
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
        await self.steps.idle(timeout=5)

    async def adopt(self, incident_ids: list[str]) -> tuple[int, int]:
        """Drive incidents this replica has claimed: re-arm their windows from the database (an
        overdue one fires at once) and finish pages a crash interrupted. Returns (windows, re-sent).

        Idempotent, and safe beside steps running here: each incident is taken under its lock, a
        window only ever moves forward, and a page this process is still sending is left alone."""
        windows = {w[0]: w for w in await asyncio.to_thread(self.store.windows_of, incident_ids)}
        for incident_id in incident_ids:
            async with self._lock(incident_id):
                self.owned.add(incident_id)
                if incident_id in windows:
                    _, cycle, leg_index, deadline = windows[incident_id]
                    self.windows.arm(incident_id, deadline, cycle, leg_index, only_if_newer=True)
        resent = 0
        for incident_id, page, already_resent in await asyncio.to_thread(self.store.unsent_pages, incident_ids):
            if already_resent:  # sent once, re-sent once, still unconfirmed: give up on it, visibly
                if (incident_id, page.key) not in self._pages:
                    await self.handle(incident_id, PageFailed(page, "not confirmed after a re-send (restarts)"))
                continue
            async with self._lock(incident_id):
                if (incident_id, page.key) in self._pages:  # ours, still trying: not interrupted
                    continue
                now = self.now()
                claim = await self.steps.submit(lambda tx: self.store.claim_resend_in(tx, page, incident_id, now), incident_id)
                if claim is None:
                    continue
                resent += 1
                leg_ends = claim.walk.deadline if claim.walk is not None and page.key in claim.walk.live else None
                self._page(incident_id, page, claim, leg_ends)
        return len(windows), resent

    def _uncertain(self, incident_ids: list[str]) -> None:
        """A commit failed: what those steps decided may be in the database with its commands never
        carried out (a window not armed, pages not sent). Drive the ones that are ours again from the
        database, once it answers. While stopping, the replica that takes over does that instead."""
        if incident_ids and self._stopped:
            log.warning("a commit failed while stopping: %d incidents are left to the next owner", len(incident_ids))
        elif incident_ids:
            self._spawn(self._retrying(self._readopt, incident_ids))

    async def _readopt(self, incident_ids: list[str]) -> None:
        found = await asyncio.to_thread(self.store.statuses, incident_ids)
        for incident_id, standing in found.items():
            if standing.status not in walk.ACTIVE:  # taken or resolved by the step whose answer was lost: stop what is ours
                await self.reconsider(incident_id)
        mine = [i for i, standing in found.items() if standing.driven and standing.owner == self.store.replica]
        if mine:
            windows, resent = await self.adopt(mine)
            log.warning("after an uncertain commit: %d incident(s) driven again (%d windows re-armed, %d pages re-sent)",
                        len(mine), windows, resent)

    def driving(self) -> set[str]:
        """Incidents this replica believes it drives."""
        return set(self.owned)

    def paging(self) -> set[str]:
        """Incidents with pages in flight here (driven here or not)."""
        return {incident_id for incident_id, _ in self._pages}

    async def reconsider(self, incident_id: str) -> str | None:
        """Is this incident still ours? Checked in the database under the incident's lock, so a step
        here that just took it back is never undone. Taken or resolved → our pages stop (recorded),
        but for an expiring acknowledgement's reminder still waiting on the acker; closed → our window
        too; driven by another replica → our window stops, pages in flight finish (the walk ignores
        stale ones)."""
        async with self._lock(incident_id):
            found = (await asyncio.to_thread(self.store.statuses, [incident_id])).get(incident_id)
            if found is None:
                return None
            owner = found.owner
            if found.status not in walk.ACTIVE:  # nobody may be paged now but the acker, by their reminder
                self._stop_pages(incident_id, keep=found.live)
            if not found.driven:
                self.owned.discard(incident_id)
                self.windows.cancel(incident_id)
                return "closed"
            if owner != self.store.replica and incident_id in self.owned:
                self.owned.discard(incident_id)
                self.windows.cancel(incident_id)
                return "taken"
            return None

    async def refresh_gauges(self) -> None:
        counts = await asyncio.to_thread(self.store.count_by_status)
        self.metrics.open_incidents.set(sum(counts.get(s, 0) for s in walk.ACTIVE))

    # -- inputs -------------------------------------------------------------------------------------

    async def open(self, new: NewIncident, claim: Callable[[Any], bool] | None = None) -> StepResult:
        """Open an incident (raises group_commit.Rejected for an unknown ladder with no default).
        `claim(tx)`: a condition checked in the opening's own transaction (False: open nothing)."""
        incident_var.set(new.id)
        async with self._lock(new.id):
            now = self.now()
            result = await self.steps.submit(lambda tx: self.store.open_in(tx, new, self.default_ladder, now, claim), new.id)
            self._carry_out(new.id, result)
        if result.outcome == "opened":
            self.metrics.incidents_opened.inc()
        return result

    async def acknowledge(self, incident_id: str, by: str, channel: str | None, contact: str | None = None) -> Answer:
        """The one acknowledgement path: a key press (voice), a reply (sms), the app (push), NATS
        (nats: an app gateway, the CLI), or an operator (channel None). `contact`, when known, must
        have been paged for the incident."""
        result = await self.handle(incident_id, walk.Acknowledge(by, channel, contact))
        renewed = any(isinstance(c, Emit) and c.event == "ack_renewed" for c in result.commands)
        answer = self._answer(incident_id, result, RENEWED if renewed else ACKNOWLEDGED)
        if answer.result == walk.TAKEN and answer.by == by:  # already theirs (a retry, an answer lost with a commit)
            return replace(answer, result=ACKNOWLEDGED, reason="")
        return answer

    async def connect_caller(self, incident_id: str, by: str, contact: str | None) -> Answer:
        """The acker asked to be put through to the caller (SPEC §11): `caller_connected` is recorded
        and the answer carries the number to dial; anyone else, or a closed incident, gets why not."""
        result = await self.handle(incident_id, walk.ConnectCaller(by, contact))
        return self._answer(incident_id, result, CONNECTED)

    async def pass_on(
        self, incident_id: str, by: str, channel: str | None, contact: str | None = None,
        cycle: int | None = None, leg_index: int | None = None,
    ) -> Answer:
        """The one pass path. `cycle`/`leg_index`: the leg the person was paged for (a late key press
        for a leg that is over changes nothing)."""
        result = await self.handle(incident_id, walk.Pass(by, channel, contact, cycle, leg_index))
        return self._answer(incident_id, result, PASSED)

    async def resolve(self, incident_id: str, by: str | None) -> Answer:
        result = await self.handle(incident_id, walk.Resolve(by))
        return self._answer(incident_id, result, RESOLVED)

    @staticmethod
    def _answer(incident_id: str, result: StepResult, done: str) -> Answer:
        w = result.walk
        status, summary = (w.status if w else None), result.summary
        if result.outcome == "unknown":
            return Answer(UNKNOWN, incident_id, reason=f"no incident with id {incident_id!r}")
        caller = result.caller if w is not None and w.plan.connect_caller else None
        if result.outcome == "changed":
            return Answer(done, incident_id, status, summary, by=w.acked_by if w else None, caller=caller)
        why = result.ignored
        assert why is not None, "a step that changed nothing carries the walk's reason"
        return Answer(why.kind, incident_id, status, summary, by=why.by, reason=why.reason, caller=caller)

    async def handle(self, incident_id: str, event: Event) -> StepResult:
        # Shielded: a step that may have committed must have its commands carried out (a window
        # armed, pages sent) even when the task asking for it is cancelled (pages being stopped).
        step = asyncio.get_running_loop().create_task(self._handle(incident_id, event))
        self._tasks.add(step)  # stop() waits for it like any other work
        step.add_done_callback(self._step_done)
        return await asyncio.shield(step)

    def _step_done(self, step: asyncio.Task[Any]) -> None:
        self._tasks.discard(step)
        if not step.cancelled() and step.exception() is not None:  # retrieved: its caller may be gone
            log.debug("a step ended with %s", type(step.exception()).__name__)

    async def _handle(self, incident_id: str, event: Event) -> StepResult:
        incident_var.set(incident_id)
        async with self._lock(incident_id):
            now = self.now()
            result = await self.steps.submit(lambda tx: self.store.step_in(tx, incident_id, event, now), incident_id)
            self._carry_out(incident_id, result)
        return result

    async def reject(self, reason: str, incident_id: str | None, msg_id: str) -> None:
        incident_var.set(incident_id)
        self.metrics.rejected.inc()
        if incident_id:
            async with self._lock(incident_id):
                await asyncio.to_thread(self.store.reject, reason, self.now(), incident_id, msg_id)
        else:
            await asyncio.to_thread(self.store.reject, reason, self.now(), None, msg_id)
        self.on_events()

    async def window_expired(self, incident_id: str, cycle: int, leg_index: int, deadline: datetime) -> None:
        incident_var.set(incident_id)
        self.metrics.window_lateness.observe(max((self.now() - deadline).total_seconds(), 0.0))
        try:
            await self.handle(incident_id, walk.WindowExpired(cycle, leg_index))
        except Exception:  # a failed step must not lose the window: try again shortly
            log.exception("window of incident %s could not be processed; retrying in 1s", incident_id)
            # Not through the scheduler: re-arming under the incident's job id could replace a newer
            # window armed meanwhile. A stale retry is harmless: the walk ignores an old (cycle, leg).
            self._spawn(self._window_retry(incident_id, cycle, leg_index, deadline))

    async def _window_retry(self, incident_id: str, cycle: int, leg_index: int, deadline: datetime) -> None:
        await asyncio.sleep(1)
        await self.window_expired(incident_id, cycle, leg_index, deadline)

    # -- carrying out -------------------------------------------------------------------------------

    def _carry_out(self, incident_id: str, result: StepResult) -> None:
        emitted = False
        for command in result.commands:
            if isinstance(command, ArmWindow):
                self.windows.arm(incident_id, command.deadline, command.cycle, command.leg_index)
                self.owned.add(incident_id)  # the step took the lease (escalator.store.incidents)
            elif isinstance(command, CancelWindow):
                self.windows.cancel(incident_id)
            elif isinstance(command, StopPages):
                self._stop_pages(incident_id)
            elif isinstance(command, CancelCalls):
                self._spawn(self._cancel_calls(incident_id, command))
            elif isinstance(command, PageCmd):
                leg_ends = result.walk.deadline if result.walk is not None and command.key in result.walk.live else None
                self._page(incident_id, command, result, leg_ends)
                self.owned.add(incident_id)  # the step took the incident (escalator.store.incidents)
            elif isinstance(command, Notify):
                self._spawn(self._notify(incident_id, command, result.contacts))
            elif isinstance(command, Emit):
                emitted = True
                self._count(command)
                if command.event == "acknowledged" and result.opened_at is not None:
                    self.metrics.time_to_acknowledge.observe((command.at - result.opened_at).total_seconds())
        if result.outcome == "opened":
            self.owned.add(incident_id)
        elif result.walk is not None and not walk.driven(result.walk.status, result.walk.deadline is not None):
            self.owned.discard(incident_id)
        if emitted:
            self.on_events()

    def _count(self, emit: Emit) -> None:
        self.metrics.events.labels(emit.event).inc()
        if emit.event == "acknowledged":
            self.metrics.acknowledgements.labels(emit.fields.get("channel") or "operator").inc()
        if emit.event in ("page_sent", "page_failed"):
            self.metrics.pages.labels(emit.fields.get("channel", "?"), emit.event.removeprefix("page_")).inc()

    def _stop_pages(self, incident_id: str, keep: frozenset[str] = frozenset()) -> None:
        """Somebody owns the incident (or it is resolved): pages still being sent must not ring anyone
        (but those in `keep`)."""
        for page in [p for p in self._pages.values() if p.incident_id == incident_id and p.key not in keep]:
            if page.task is not None and page.task is not asyncio.current_task() and not page.task.done() and not page.answered:
                page.stopped = True
                page.task.cancel()

    def _page(self, incident_id: str, command: PageCmd, result: StepResult, leg_ends: datetime | None = None) -> None:
        """Send one page of a step's `result`. `leg_ends`: when its leg's window closes; the page has
        what is left of it when it is handed to its channel (its retries and the SMS's validity end there)."""
        page = PageInFlight(incident_id, command.key)
        self._pages[(incident_id, command.key)] = page  # now, not when the task starts: adopt() checks it
        offers_caller = result.walk is None or result.walk.plan.connect_caller
        message = _Message(result.summary, result.contacts.get(command.contact), result.codes.get(command.key),
                           result.caller if offers_caller else None, command.contact in result.opted_out)
        page.task = self._spawn(self._send(page, command, message, leg_ends))

    async def _send(self, page: PageInFlight, command: PageCmd, message: _Message, leg_ends: datetime | None) -> None:
        if leg_ends is not None:
            command = replace(command, window_s=max((leg_ends - self.now()).total_seconds(), 0.0))
        try:
            await self._deliver(page, command, message)
        except asyncio.CancelledError:
            if page.stopped:  # not a shutdown: the incident was taken or resolved; record that
                stop = PageFailed(command, "stopped: the incident was taken or resolved")
                self._spawn(self._retrying(self.handle, page.incident_id, stop))
            raise
        finally:
            if self._pages.get((page.incident_id, page.key)) is page:
                del self._pages[(page.incident_id, page.key)]

    async def _deliver(self, page: PageInFlight, command: PageCmd, what: _Message) -> None:
        incident_id, contact = page.incident_id, what.contact
        channel = self.channels.get(command.channel)
        if channel is None or contact is None:
            outcome = Outcome(False, reason="no such channel" if channel is None else "contact no longer exists")
        elif command.channel == walk.SMS and what.opted_out:
            outcome = Outcome(False, reason=OPTED_OUT)  # the provider would refuse it (error 21610): fail now
        else:
            message = Page(
                incident_id, command.key, command.channel, contact, what.summary, command.cycle, command.leg, command.window_s,
                what.code, command.leg_index, reminder=walk.is_reminder(command.key), caller=what.caller,
            )
            try:
                # A page is only useful within its leg's window: the channel gives up on a provider
                # that has not answered by then (and its breaker counts it). This cut-off, a moment
                # later, only guards against a channel that fails to.
                outcome = await asyncio.wait_for(channel.send(message), timeout=command.window_s + BACKSTOP_S)
            except TimeoutError:
                outcome = Outcome(False, reason=f"no answer from the provider within {command.window_s}s")
            except Exception as exc:  # a channel bug must fail the page, not the walk
                log.exception("channel %s failed on incident %s", command.channel, incident_id)
                outcome = Outcome(False, reason=f"channel error: {type(exc).__name__}")
        page.answered = True  # the answer is in: stopping now changes nothing
        if outcome.opted_out and contact is not None and contact.phone:
            log.warning("%s opted out of SMS (STOP): its texts fail until it texts START", mask_phone(contact.phone))
            await self._retrying(asyncio.to_thread, self.store.opt_out, contact.phone, self.now(), opt_outs.TWILIO_21610)
        if outcome.dead_tokens and contact is not None:
            log.warning("retiring %d push token(s) of %s: FCM says they no longer exist", len(outcome.dead_tokens), contact.id)
            await self._retrying(asyncio.to_thread, self.store.retire_push_tokens, contact.id, outcome.dead_tokens, self.now())
        event = PageSent(command, outcome.ref) if outcome.ok else PageFailed(command, outcome.reason or "failed")
        try:
            await self._record_outcome(incident_id, event)
        except Exception:  # alone from here on: an answer that cannot be written must not hold up the others
            log.exception("recording page outcomes of incident %s failed; recording each on its own", incident_id)
            await self._retrying(self.handle, incident_id, event)

    async def _record_outcome(self, incident_id: str, event: Event) -> StepResult:
        """A leg pages on several channels at once and their answers come back together: those that
        arrive while the incident is busy are recorded by one step (one row read and written), not
        one step each. Like handle(), the step runs as its own task, so cancelling a waiter (pages
        being stopped) never stops a step that may have committed."""
        waiting = self._outcomes.get(incident_id)
        if waiting is None:
            waiting = self._outcomes[incident_id] = _Outcomes(asyncio.get_running_loop().create_future())
            step = asyncio.get_running_loop().create_task(self._record_outcomes(incident_id, waiting))
            self._tasks.add(step)
            step.add_done_callback(self._step_done)
            step.add_done_callback(lambda t: self._outcomes_settled(incident_id, waiting, t))
        waiting.events.append(event)
        return await asyncio.shield(waiting.done)

    async def _record_outcomes(self, incident_id: str, waiting: _Outcomes) -> StepResult:
        incident_var.set(incident_id)
        async with self._lock(incident_id):
            if self._outcomes.get(incident_id) is waiting:  # from here on, later answers wait for the next step
                del self._outcomes[incident_id]
            now, events = self.now(), list(waiting.events)
            result = await self.steps.submit(lambda tx: self.store.step_in(tx, incident_id, events, now), incident_id, urgent=False)
            self._carry_out(incident_id, result)
        return result

    def _outcomes_settled(self, incident_id: str, waiting: _Outcomes, step: asyncio.Task[StepResult]) -> None:
        """The recording task ended, however (even cancelled before it started): tell its waiters."""
        if self._outcomes.get(incident_id) is waiting:
            del self._outcomes[incident_id]
        if step.cancelled():
            waiting.done.set_exception(RuntimeError("the step was cancelled"))
        elif step.exception() is not None:
            waiting.done.set_exception(step.exception())  # type: ignore[arg-type]
        else:
            waiting.done.set_result(step.result())
            return
        waiting.done.exception()  # retrieved: every waiter retries on its own

    async def note(self, incident_id: str, text: str | None, delivery: tuple[str, str] | None = None) -> None:
        """A line in the incident's timeline that is not an event (a delivery report, a voicemail, a
        call we cancelled), and/or what the provider last said of a page (`delivery`: (page key,
        status), shown by `escalator watch`): written with the next group of steps, as routine work
        that never holds up a step that pages (a storm's thousands of delivery reports are not a
        transaction each)."""
        now = self.now()

        def write(tx: Any) -> None:
            if delivery is not None:
                self.store.delivery_in(tx, incident_id, delivery[0], delivery[1], now)
            if text is not None:
                self.store.note_in(tx, incident_id, text, now)

        await self.steps.submit(write, incident_id, urgent=False)

    async def _cancel_calls(self, incident_id: str, command: CancelCalls) -> None:
        """Best effort: a call that is no longer queued or ringing is left alone by the provider."""
        channel = self.channels.get(walk.VOICE)
        if channel is None:
            return
        refs = list(command.refs)
        if command.keys:
            try:
                refs += await asyncio.to_thread(self.store.call_refs, incident_id, command.keys)
            except Exception:
                log.warning("could not look up the calls to stop for incident %s", incident_id)
        for ref in refs:
            await channel.cancel(ref)

    async def _notify(self, incident_id: str, command: Notify, contacts: Mapping[str, Any]) -> None:
        contact = contacts.get(command.contact)
        if contact is None:
            return
        text = NOTICES.get(command.kind, command.kind).format(incident=incident_id, by=command.by)
        # One short text, never a call: SMS when the contact has a phone, else push.
        name = walk.SMS if contact.phone else walk.PUSH if contact.push_tokens else None
        channel = self.channels.get(name) if name else None
        if channel is None:
            return
        try:
            await asyncio.wait_for(channel.notify(contact, incident_id, text), timeout=30)
        except Exception:
            log.warning("notice to %s on %s failed for incident %s", contact.id, name, incident_id)

    async def _retrying(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Recording a page outcome must survive a short database outage: retry with back-off."""
        delay = 0.2
        while True:
            try:
                return await fn(*args)
            except Exception:
                log.exception("recording a step failed; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    # -- plumbing -----------------------------------------------------------------------------------

    def _lock(self, incident_id: str) -> _IncidentLock:
        return _IncidentLock(self._locks, incident_id)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


@dataclass(frozen=True)
class _Message:
    """What a page says and to whom (from the step that decided it)."""

    summary: str
    contact: Any
    code: str | None
    caller: str | None
    opted_out: bool  # the contact's number opted out of SMS


@dataclass
class _Outcomes:
    done: asyncio.Future[StepResult]
    events: list[Event] = field(default_factory=list)


class _IncidentLock:
    """An asyncio lock per incident, dropped when nobody holds or waits for it."""

    def __init__(self, locks: dict[str, asyncio.Lock], key: str):
        self.locks, self.key = locks, key

    async def __aenter__(self) -> None:
        lock = self.locks.get(self.key)
        if lock is None:
            lock = self.locks[self.key] = asyncio.Lock()
        self.lock = lock
        await lock.acquire()

    async def __aexit__(self, *exc: Any) -> None:
        self.lock.release()
        if not self.lock.locked() and not getattr(self.lock, "_waiters", None):
            self.locks.pop(self.key, None)
