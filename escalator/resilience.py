"""How provider calls fail well (SPEC §5 "Failures"): retries with back-off, and a circuit breaker.

- Transient errors (timeouts, connection errors, 5xx, 429) are retried with exponential back-off and
  jitter (tenacity), honouring Retry-After, and never past the page's deadline: a retry that could
  only land after the leg's window is not made.
- Permanent errors (4xx: a bad number, an unregistered token) are not retried and do not count
  against the provider: the input is wrong, not the provider.
- One breaker per provider channel: after repeated transient failures it opens and fails pages at
  once, so the other channels carry the leg; after a cool-down one probe is let through (half-open).

The breaker is our own (~40 lines) on purpose: pybreaker does not support asyncio, aiobreaker is
unmaintained and reads wall time, purgatory reads wall time, and none takes an injectable monotonic
clock, which the tests and a correct cool-down both need (NOTES).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from escalator.provider_queue import FIRST, RETRY, Abandoned, ProviderQueue

T = TypeVar("T")
Clock = Callable[[], float]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
MIN_SEND_S = 0.05  # a request with less time than this left before its page's deadline is not sent
FAIR_TIMEOUT_S = 1.0  # a timeout counts against the provider only if the request had this long


class ProviderError(Exception):
    """A provider's answer or a transport failure, classified once, where the call is made."""

    def __init__(self, reason: str, *, transient: bool, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.status = status
        self.retry_after = retry_after

    @classmethod
    def from_status(cls, status: int, detail: str = "", retry_after: str | float | None = None) -> ProviderError:
        transient = status == 429 or status >= 500
        seconds: float | None = None
        if retry_after is not None:
            try:
                seconds = max(float(retry_after), 0.0)
            except (TypeError, ValueError):
                seconds = None  # an HTTP-date: fall back to our own back-off
        kind = "transient" if transient else "rejected"
        return cls(f"{kind}: HTTP {status}" + (f" {detail}" if detail else ""), transient=transient, status=status, retry_after=seconds)


class BreakerOpen(Exception):
    def __init__(self, name: str):
        super().__init__(f"breaker open: {name} is failing, other channels carry the leg")
        self.reason = str(self)


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Clock = time.monotonic,
        on_change: Callable[[str, str, str], None] = lambda name, old, new: None,
    ):
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.on_change = on_change
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """May a call go out now? In half-open, exactly one probe at a time."""
        if self.state == OPEN and self.clock() - self.opened_at >= self.reset_timeout:
            self._set(HALF_OPEN)
        if self.state == CLOSED:
            return True
        if self.state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._probing = False
        self.failures = 0
        if self.state != CLOSED:
            self._set(CLOSED)

    def release(self) -> None:
        """A call ended without telling anything about the provider (cancelled)."""
        self._probing = False

    def failure(self) -> None:
        self._probing = False
        self.failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.failure_threshold):
            self.opened_at = self.clock()
            self._set(OPEN)

    def _set(self, state: str) -> None:
        old, self.state = self.state, state
        self.on_change(self.name, old, state)


def backoff(initial: float = 0.5, maximum: float = 8.0, rng: Callable[[], float] = random.random) -> Callable[[RetryCallState], float]:
    """Exponential back-off with full jitter, or the provider's Retry-After when it gave one."""

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return exc.retry_after
        ceiling = min(maximum, initial * 2 ** (state.attempt_number - 1))
        return ceiling / 2 + rng() * ceiling / 2

    return wait


async def call(
    attempt: Callable[[], Awaitable[T]],
    breaker: CircuitBreaker,
    deadline: float,
    clock: Clock = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    wait: Callable[[RetryCallState], float] | None = None,
    queue: ProviderQueue | None = None,
    priority: int = FIRST,
) -> T:
    """Run `attempt` through the breaker, retrying transient failures until `deadline` (on `clock`).

    With a `queue`, each attempt first waits for one of the provider's slots (the first at
    `priority`, retries behind first pages); only then do the breaker and the request's timeout
    see it, so waiting inside escalator is never counted as the provider's failure.

    Raises BreakerOpen, Abandoned (no slot before the deadline), or the last ProviderError
    (permanent, or transient with no time left).
    """
    tries = 0

    async def guarded() -> T:
        nonlocal tries
        turn = priority if tries == 0 else RETRY
        tries += 1
        async with queue.slot(turn, deadline) if queue is not None else contextlib.nullcontext() as waited:
            budget = deadline - clock()
            if budget < MIN_SEND_S:  # the slot came too late to be of use: nothing is sent
                raise Abandoned(waited or 0.0)
            return await _guarded(budget)

    async def _guarded(budget: float) -> T:
        if not breaker.allow():
            raise BreakerOpen(breaker.name)
        try:
            # The request's own deadline is the page's: a provider that has not answered by then
            # failed, and says so here, before anything outside cancels the page. It counts against
            # the provider only if it had a fair time to answer: a request sent with a moment left
            # (it waited in escalator) says nothing about the provider.
            result = await asyncio.wait_for(attempt(), timeout=budget)
        except TimeoutError:
            if budget >= FAIR_TIMEOUT_S:
                breaker.failure()
            else:
                breaker.release()
            raise ProviderError("transient: no answer from the provider before the page's window ended", transient=True) from None
        except ProviderError as exc:
            if exc.transient:
                breaker.failure()
            else:
                breaker.success()  # the provider answered; the request was wrong
            raise
        except asyncio.CancelledError:
            # Stopped from outside: the incident was taken or resolved, or the daemon is stopping.
            # Nothing is known about the provider, so nothing is counted; a half-open probe is
            # released for the next call.
            breaker.release()
            raise
        except BaseException:
            breaker.failure()  # a bug: counted, and the half-open probe released with it
            raise
        breaker.success()
        return result

    # Most calls succeed at once: the first attempt is made here, and tenacity's machinery (which
    # costs as much as the request's own Python work) is only set up for the retries.
    try:
        return await guarded()
    except ProviderError as exc:
        if not exc.transient:
            raise
        first = exc

    def no_time_left(state: RetryCallState) -> bool:
        return clock() + state.upcoming_sleep >= deadline

    retry_wait = wait or backoff()
    pause = retry_wait(_after(first))
    if clock() + pause >= deadline:
        raise first
    await sleep(pause)

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.transient),
        wait=retry_wait,
        stop=no_time_left,
        sleep=sleep,
        reraise=True,
    )
    return await retrying(guarded)


def _after(exc: BaseException) -> RetryCallState:
    """The state of a first attempt that failed with `exc`, for the back-off (Retry-After) to read."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
    state.set_exception((type(exc), exc, exc.__traceback__))
    return state
