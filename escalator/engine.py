"""The shell around the walk: record each decision, then carry out its commands.

Every step runs the pure walk inside one database transaction (escalator.store.incidents); only
after it commits are windows armed or cancelled, pages sent and events handed to the outbox.
Steps for one incident are serialised in this process by a lock; the database row lock does the
same across processes. Pages run as their own tasks, bounded by the leg's window, so a hung
provider can never delay a window or another incident.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from escalator import clock, walk
from escalator.channels import Channel, Outcome, Page
from escalator.logs import incident_var
from escalator.metrics import Metrics
from escalator.store.incidents import IncidentStore, NewIncident, StepResult
from escalator.store.sms_codes import SmsCodes
from escalator.walk import ArmWindow, CancelWindow, Emit, Event, Notify, PageCmd, PageFailed, PageSent
from escalator.windows import Windows

log = logging.getLogger("escalator.engine")

NOTICES = {"taken": "Incident {incident} was taken by {by}. No action needed."}


class Engine:
    def __init__(
        self,
        store: IncidentStore,
        channels: Mapping[str, Channel],
        metrics: Metrics,
        default_ladder: str | None = None,
        on_events: Callable[[], None] = lambda: None,
        now: Callable[[], datetime] = clock.now,
        codes: SmsCodes | None = None,
    ):
        self.store = store
        self.channels = channels
        self.metrics = metrics
        self.default_ladder = default_ladder
        self.on_events = on_events  # wakes the outbox publisher
        self.now = now
        self.codes = codes
        self.windows = Windows(self.window_expired)
        self.steps = StepBatcher(store.run_batch)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._page_tasks: dict[str, set[asyncio.Task[Any]]] = {}  # pages in flight, per incident
        self._stopped: set[asyncio.Task[Any]] = set()  # page tasks cancelled because the incident closed
        self._inflight: set[tuple[str, str]] = set()  # (incident, page key) being sent by this process
        self._recording: set[asyncio.Task[Any]] = set()  # page tasks recording the provider's answer
        self.owned: set[str] = set()  # incidents this replica drives (escalator.leases)
        self._outcomes: dict[str, _Outcomes] = {}  # page outcomes waiting to be recorded together

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
                if (incident_id, page.key) not in self._inflight:
                    await self.handle(incident_id, PageFailed(page, "not confirmed after a re-send (restarts)"))
                continue
            async with self._lock(incident_id):
                if (incident_id, page.key) in self._inflight:  # ours, still trying: not interrupted
                    continue
                claim = await asyncio.to_thread(self.store.claim_resend, page, incident_id)
                if claim is None:
                    continue
                resent += 1
                if claim.walk is not None and claim.walk.deadline is not None:  # retries end with the leg
                    left = (claim.walk.deadline - self.now()).total_seconds()
                    page = replace(page, window_s=max(min(page.window_s, left), 1.0))
                self._page(incident_id, page, claim.summary, claim.contacts.get(page.contact))
        return len(windows), resent

    def driving(self) -> set[str]:
        """Incidents this replica believes it drives."""
        return set(self.owned)

    def paging(self) -> set[str]:
        """Incidents with pages in flight here (driven here or not)."""
        return set(self._page_tasks)

    async def reconsider(self, incident_id: str) -> str | None:
        """Is this incident still ours? Checked in the database under the incident's lock, so a step
        here that just took it back is never undone. Closed → our pages stop (recorded); driven by
        another replica → our window stops, pages in flight finish (the walk ignores stale ones)."""
        async with self._lock(incident_id):
            found = (await asyncio.to_thread(self.store.statuses, [incident_id])).get(incident_id)
            if found is None:
                return None
            status, owner = found
            if status not in walk.ACTIVE:
                self.owned.discard(incident_id)
                self.windows.cancel(incident_id)
                self._stop_pages(incident_id)
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

    async def open(self, new: NewIncident) -> StepResult:
        """Open an incident (raises store.Rejected for an unknown ladder with no default)."""
        incident_var.set(new.id)
        async with self._lock(new.id):
            now = self.now()
            result = await self.steps.submit(lambda session: self.store.open_in(session, new, self.default_ladder, now))
            self._carry_out(new.id, result)
        if result.outcome == "opened":
            self.metrics.incidents_opened.inc()
        return result

    async def handle(self, incident_id: str, event: Event, note_if_ignored: str | None = None) -> StepResult:
        # Shielded: a step that may have committed must have its commands carried out (a window
        # armed, pages sent) even when the task asking for it is cancelled (pages being stopped).
        step = asyncio.get_running_loop().create_task(self._handle(incident_id, event, note_if_ignored))
        self._tasks.add(step)  # stop() waits for it like any other work
        step.add_done_callback(self._step_done)
        return await asyncio.shield(step)

    def _step_done(self, step: asyncio.Task[Any]) -> None:
        self._tasks.discard(step)
        if not step.cancelled() and step.exception() is not None:  # retrieved: its caller may be gone
            log.debug("a step ended with %s", type(step.exception()).__name__)

    async def _handle(self, incident_id: str, event: Event, note_if_ignored: str | None) -> StepResult:
        incident_var.set(incident_id)
        async with self._lock(incident_id):
            now = self.now()
            result = await self.steps.submit(lambda session: self.store.step_in(session, incident_id, event, now, note_if_ignored))
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
            elif isinstance(command, PageCmd):
                self._page(incident_id, command, result.summary, result.contacts.get(command.contact), result.codes.get(command.key))
                self.owned.add(incident_id)  # the step took the incident (escalator.store.incidents)
            elif isinstance(command, Notify):
                self._spawn(self._notify(incident_id, command, result.contacts))
            elif isinstance(command, Emit):
                emitted = True
                self._count(command)
                if command.event == "acknowledged" and result.opened_at is not None:
                    self.metrics.time_to_acknowledge.observe((command.at - result.opened_at).total_seconds())
                if command.event in ("acknowledged", "resolved"):
                    self._stop_pages(incident_id)
        if result.outcome == "opened":
            self.owned.add(incident_id)
        elif result.walk is not None and result.walk.status not in walk.ACTIVE:
            self.owned.discard(incident_id)
        if emitted:
            self.on_events()

    def _count(self, emit: Emit) -> None:
        self.metrics.events.labels(emit.event).inc()
        if emit.event == "acknowledged":
            self.metrics.acknowledgements.labels(emit.fields.get("channel") or "operator").inc()
        if emit.event in ("page_sent", "page_failed"):
            self.metrics.pages.labels(emit.fields.get("channel", "?"), emit.event.removeprefix("page_")).inc()

    def _stop_pages(self, incident_id: str) -> None:
        """Somebody owns the incident (or it is resolved): pages still retrying must not ring anyone."""
        for task in self._page_tasks.pop(incident_id, set()):
            if task is not asyncio.current_task() and not task.done():
                self._stopped.add(task)
                task.cancel()

    def _page(self, incident_id: str, command: PageCmd, summary: str, contact: Any, code: str | None = None) -> None:
        self._inflight.add((incident_id, command.key))  # now, not when the task starts: adopt() checks it
        self._spawn(self._send(incident_id, command, summary, contact, code), page_of=incident_id)

    async def _send(self, incident_id: str, command: PageCmd, summary: str, contact: Any, code: str | None) -> None:
        try:
            await self._deliver(incident_id, command, summary, contact, code)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task in self._stopped and task not in self._recording:  # not a shutdown, nor already answered
                self._stopped.discard(task)
                stop = PageFailed(command, "stopped: the incident was taken or resolved")
                self._spawn(self._retrying(self.handle, incident_id, stop))
            raise
        finally:
            self._inflight.discard((incident_id, command.key))
            self._stopped.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._recording.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _deliver(self, incident_id: str, command: PageCmd, summary: str, contact: Any, code: str | None) -> None:
        channel = self.channels.get(command.channel)
        if channel is None or contact is None:
            outcome = Outcome(False, reason="no such channel" if channel is None else "contact no longer exists")
        else:
            # Normally allocated by the step that decided the page; a re-send looks its code up.
            if code is None and command.channel == "sms" and self.codes is not None and contact.phone:
                codes, now = self.codes, self.now()
                code = await self._retrying(
                    self.steps.submit, lambda session: codes.code_for_in(session, incident_id, command, contact.phone, now)
                )
            page = Page(
                incident_id, command.key, command.channel, contact, summary, command.cycle, command.leg, command.window_s, code,
                command.leg_index,
            )
            try:
                # A page is only useful within its leg's window; a provider that hangs is cut off there.
                outcome = await asyncio.wait_for(channel.send(page), timeout=command.window_s)
            except TimeoutError:
                outcome = Outcome(False, reason=f"no answer from the provider within {command.window_s}s")
            except Exception as exc:  # a channel bug must fail the page, not the walk
                log.exception("channel %s failed on incident %s", command.channel, incident_id)
                outcome = Outcome(False, reason=f"channel error: {type(exc).__name__}")
        if outcome.dead_tokens and contact is not None:
            log.warning("retiring %d push token(s) of %s: FCM says they no longer exist", len(outcome.dead_tokens), contact.id)
            await self._retrying(asyncio.to_thread, self.store.retire_push_tokens, contact.id, outcome.dead_tokens, self.now())
        event = PageSent(command, outcome.ref) if outcome.ok else PageFailed(command, outcome.reason or "failed")
        self._recording.add(asyncio.current_task())  # type: ignore[arg-type]  # the answer is in: stopping now changes nothing
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
            result = await self.steps.submit(lambda session: self.store.step_in(session, incident_id, events, now), urgent=False)
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

    async def _notify(self, incident_id: str, command: Notify, contacts: Mapping[str, Any]) -> None:
        contact = contacts.get(command.contact)
        if contact is None:
            return
        text = NOTICES.get(command.kind, command.kind).format(incident=incident_id, by=command.by)
        # One short text, never a call: SMS when the contact has a phone, else push.
        name = "sms" if contact.phone else "push" if contact.push_tokens else None
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

    def _spawn(self, coro: Any, page_of: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if page_of is not None:
            pages = self._page_tasks.setdefault(page_of, set())
            pages.add(task)

            def done(t: asyncio.Task[Any]) -> None:
                pages.discard(t)
                if not pages and self._page_tasks.get(page_of) is pages:
                    del self._page_tasks[page_of]

            task.add_done_callback(done)


@dataclass
class _Outcomes:
    done: asyncio.Future[StepResult]
    events: list[Event] = field(default_factory=list)


class StepBatcher:
    """Group commit. Steps that arrive while a transaction is being written wait for the next one,
    and share it: one commit for many steps, in arrival order. Alone, a step is written at once.

    Steps of one incident never share a batch out of order: each waits for its incident's lock,
    which its predecessor holds until its result is carried out.

    Routine steps (recording what a provider answered: nobody waits on it to be paged) linger up to
    LINGER seconds to share a transaction with others, and go after the urgent ones (openings,
    windows, acknowledgements), which never wait for them to be queued. On PostgreSQL, where each
    statement is a round trip, that takes a third of the transactions off the writer at 100
    incidents/s, and the time it saves is what an opening waits for.
    """

    LIMIT = 256
    LINGER = 0.02

    def __init__(self, run_batch: Callable[[list[Any]], list[Any]]):
        self.run_batch = run_batch
        self._urgent: list[tuple[Any, asyncio.Future[Any]]] = []
        self._routine: list[tuple[float, Any, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[Any] | None = None

    async def submit(self, call: Callable[[Any], Any], urgent: bool = True) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if urgent:
            self._urgent.append((call, future))
            self._wake.set()
        else:
            self._routine.append((loop.time(), call, future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    async def idle(self, timeout: float) -> None:
        """Wait for the writer to finish what it took (shutdown: nothing may write after it)."""
        if self._worker is not None and not self._worker.done():
            await asyncio.wait({self._worker}, timeout=timeout)

    def _next_batch(self) -> list[tuple[Any, asyncio.Future[Any]]]:
        # A step whose caller went away (cancelled at shutdown) is not written: nobody would carry it out.
        self._urgent = [(c, f) for c, f in self._urgent if not f.done()]
        self._routine = [(t, c, f) for t, c, f in self._routine if not f.done()]
        urgent, routine = self._urgent, self._routine
        aged = asyncio.get_running_loop().time() - self.LINGER
        ready = len(routine) if not urgent else next((i for i, (t, _, _) in enumerate(routine) if t > aged), len(routine))
        # Under a flood of urgent steps, routine ones that waited their turn still get half of a batch.
        take_routine = min(ready, self.LIMIT - min(len(urgent), self.LIMIT // 2))
        take_urgent = min(len(urgent), self.LIMIT - take_routine)
        batch = urgent[:take_urgent] + [(call, future) for _, call, future in routine[:take_routine]]
        self._urgent, self._routine = urgent[take_urgent:], routine[take_routine:]
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._urgent or self._routine:
            if not self._urgent and len(self._routine) < self.LIMIT:
                left = self._routine[0][0] + self.LINGER - loop.time()
                if left > 0:  # only routine steps: give others a moment to join them
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), left)
                    except TimeoutError:
                        pass
            batch = self._next_batch()
            if not batch:
                continue
            try:
                results = await asyncio.to_thread(self.run_batch, [call for call, _ in batch])
            except BaseException as exc:  # the one step of a batch of one failed: its caller retries
                results = [exc] * len(batch)
                if not isinstance(exc, Exception):  # cancelled: nobody will write these
                    waiting = batch + self._urgent + [(c, f) for _, c, f in self._routine]
                    for _, future in waiting:
                        if not future.done():
                            future.set_exception(RuntimeError("the step writer stopped"))
                    raise
            for (_, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)


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
