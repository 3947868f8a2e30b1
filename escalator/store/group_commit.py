"""Group commit: steps that wait at the same moment share one transaction.

The contract, for every step given to it (`IncidentStore.open_in`, `step_in`, `claim_resend_in`):
- A step is a function of a `Tx`; it may run twice. If the shared transaction fails, each step is
  run again alone, in a transaction of its own, so one bad step cannot sink the others; a step must
  therefore decide from what it reads, never from what it did before.
- A step that refuses (raises `Rejected`) does so before it writes anything: the others' writes in
  the shared transaction stay valid. This is checked (`Tx.writes`), not assumed.
- A result is returned only once its transaction committed. A failure is the caller's to retry.
- When a commit fails, whether the database kept it is unknown (the connection can drop after
  COMMIT reached the server). Whatever a step decided may then be in the database while its
  commands (windows, pages) were never carried out: `on_uncertain` receives the incidents of every
  such step, and the engine drives them again from what the database holds (Engine.adopt).

Steps of one incident never share a batch out of order: each waits for its incident's lock, which
its predecessor holds until its result is carried out.

Routine steps (recording what a provider answered: nobody waits on it to be paged) linger up to
LINGER seconds to share a transaction with others, and go after the urgent ones (openings,
windows, acknowledgements), which never wait for them to be queued. On PostgreSQL, where each
statement is a round trip, that takes a third of the transactions off the writer at 100
incidents/s, and the time it saves is what an opening waits for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from escalator.store.tx import Tx, write_tx

log = logging.getLogger("escalator.group_commit")

Step = Callable[[Tx], Any]


class Rejected(Exception):
    """The message cannot become (or act on) an incident; `reason` goes to `escalations.rejected`."""

    def __init__(self, reason: str, incident_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.incident_id = incident_id


def write_one(engine: Engine, step: Step) -> Any:
    """One step in a transaction of its own; its result only once committed."""
    with write_tx(engine) as tx:
        return _run(step, tx)


def _run(step: Step, tx: Tx) -> Any:
    before = tx.changes()
    try:
        return step(tx)
    except Rejected:
        if tx.changes() != before:  # not an assert: the check must hold under python -O too
            raise ContractBroken("a step wrote before it refused: the shared transaction would keep half of it") from None
        raise


class ContractBroken(AssertionError):
    """A step broke the group commit's contract (a bug in escalator, never in the input)."""


@dataclass
class Batch:
    results: list[Any]  # each step's result, or the exception it ended with
    uncertain: bool  # a commit failed: what the steps decided may or may not be in the database


def run_batch(engine: Engine, steps: list[Step]) -> Batch:
    """Several steps in one transaction, each result (or its Rejected) in order. If the transaction
    fails, each step is run again alone (see the contract above)."""
    try:
        with write_tx(engine) as tx:
            results: list[Any] = []
            for step in steps:
                try:
                    results.append(_run(step, tx))
                except Rejected as exc:
                    results.append(exc)
        return Batch(results, uncertain=False)
    except Exception as shared_failure:
        if len(steps) == 1:
            return Batch([shared_failure], uncertain=True)
        out: list[Any] = []
        for step in steps:
            try:
                out.append(write_one(engine, step))
            except Exception as exc:
                out.append(exc)
        return Batch(out, uncertain=True)


class GroupCommit:
    """Collects steps from the event loop and writes them on a worker thread, one batch at a time."""

    LIMIT = 256
    LINGER = 0.02

    def __init__(
        self, engine: Engine, on_uncertain: Callable[[list[str]], None] = lambda ids: None,
        write: Callable[[Engine, list[Step]], Batch] = run_batch,
    ):
        self.engine = engine
        self.on_uncertain = on_uncertain
        self.write = write  # run_batch; the scheduling tests give a stand-in
        self._urgent: list[tuple[Step, str | None, asyncio.Future[Any]]] = []
        self._routine: list[tuple[float, Step, str | None, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[Any] | None = None

    async def submit(self, step: Step, incident_id: str | None = None, urgent: bool = True) -> Any:
        """Write `step` (about `incident_id`, when it is about one) and return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if urgent:
            self._urgent.append((step, incident_id, future))
            self._wake.set()
        else:
            self._routine.append((loop.time(), step, incident_id, future))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        return await future

    async def idle(self, timeout: float) -> None:
        """Wait for the writer to finish what it took (shutdown: nothing may write after it)."""
        if self._worker is not None and not self._worker.done():
            await asyncio.wait({self._worker}, timeout=timeout)

    def _next_batch(self) -> list[tuple[Step, str | None, asyncio.Future[Any]]]:
        # A step whose caller went away (cancelled at shutdown) is not written: nobody would carry it out.
        self._urgent = [item for item in self._urgent if not item[2].done()]
        self._routine = [item for item in self._routine if not item[3].done()]
        urgent, routine = self._urgent, self._routine
        aged = asyncio.get_running_loop().time() - self.LINGER
        ready = len(routine) if not urgent else next((i for i, item in enumerate(routine) if item[0] > aged), len(routine))
        # Under a flood of urgent steps, routine ones that waited their turn still get half of a batch.
        take_routine = min(ready, self.LIMIT - min(len(urgent), self.LIMIT // 2))
        take_urgent = min(len(urgent), self.LIMIT - take_routine)
        batch = urgent[:take_urgent] + [(step, incident, future) for _, step, incident, future in routine[:take_routine]]
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
                written = await asyncio.to_thread(self.write, self.engine, [step for step, _, _ in batch])
            except BaseException:  # cancelled: nobody will write these
                waiting = [f for _, _, f in batch + self._urgent] + [f for *_, f in self._routine]
                for future in waiting:
                    if not future.done():
                        future.set_exception(RuntimeError("the step writer stopped"))
                raise
            if written.uncertain:
                incidents = sorted({incident for _, incident, _ in batch if incident is not None})
                log.warning("a commit of %d step(s) failed; driving their %d incident(s) again from the database",
                            len(batch), len(incidents))
                self.on_uncertain(incidents)
            for (_, _, future), result in zip(batch, written.results):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
