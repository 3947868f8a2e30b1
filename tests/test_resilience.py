"""Retries and the circuit breaker on a virtual monotonic clock (no real time passes)."""

from __future__ import annotations

import asyncio
import time

import pytest

from escalator.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerOpen,
    CircuitBreaker,
    ProviderError,
    backoff,
    call,
)


class VirtualTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Provider:
    """Answers with the scripted outcomes in turn; the last one repeats."""

    def __init__(self, *script: object):
        self.script = list(script)
        self.calls = 0

    async def __call__(self) -> str:
        outcome = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)


def transient(status: int = 503, retry_after: float | None = None) -> ProviderError:
    return ProviderError.from_status(status, retry_after=retry_after)


def run(coro):
    return asyncio.run(coro)


def test_classification() -> None:
    assert ProviderError.from_status(500).transient and ProviderError.from_status(503).transient
    assert ProviderError.from_status(429, retry_after="7").retry_after == 7.0
    assert ProviderError.from_status(429, retry_after="Wed, 21 Oct 2026 07:28:00 GMT").retry_after is None
    for status in (400, 401, 403, 404, 422):
        error = ProviderError.from_status(status, "invalid To number")
        assert not error.transient and error.reason == f"rejected: HTTP {status} invalid To number"


def test_transient_errors_are_retried_until_success() -> None:
    clock = VirtualTime()
    provider = Provider(transient(), transient(502), "ok")
    breaker = CircuitBreaker("sms", clock=clock)
    assert run(call(provider, breaker, deadline=clock() + 120, clock=clock, sleep=clock.sleep)) == "ok"
    assert provider.calls == 3 and breaker.state == CLOSED and breaker.failures == 0
    assert len(clock.sleeps) == 2 and all(0 < s <= 8 for s in clock.sleeps)


def test_permanent_errors_are_not_retried_and_do_not_trip_the_breaker() -> None:
    clock = VirtualTime()
    provider = Provider(ProviderError.from_status(400, "not a mobile number"))
    breaker = CircuitBreaker("sms", failure_threshold=1, clock=clock)
    with pytest.raises(ProviderError, match="rejected: HTTP 400"):
        run(call(provider, breaker, deadline=clock() + 120, clock=clock, sleep=clock.sleep))
    assert provider.calls == 1 and clock.sleeps == [] and breaker.state == CLOSED


def test_retries_never_outlive_the_deadline() -> None:
    clock = VirtualTime()
    start = clock()
    provider = Provider(transient())
    breaker = CircuitBreaker("voice", failure_threshold=1000, clock=clock)
    with pytest.raises(ProviderError, match="transient: HTTP 503"):
        run(call(provider, breaker, deadline=start + 30, clock=clock, sleep=clock.sleep))
    assert clock() < start + 30  # gave up before the window ended, not after
    assert provider.calls >= 4  # and did try, with back-off growing up to its cap
    assert max(clock.sleeps) <= 8  # jittered, capped back-off


def test_retry_after_is_honoured_but_not_past_the_deadline() -> None:
    clock = VirtualTime()
    provider = Provider(transient(429, retry_after=5), "ok")
    breaker = CircuitBreaker("sms", clock=clock)
    assert run(call(provider, breaker, deadline=clock() + 60, clock=clock, sleep=clock.sleep)) == "ok"
    assert clock.sleeps == [5.0]
    late = Provider(transient(429, retry_after=90), "ok")
    with pytest.raises(ProviderError):
        run(call(late, breaker, deadline=clock() + 60, clock=clock, sleep=clock.sleep))
    assert late.calls == 1  # waiting 90 s would outlive the 60 s left


def test_breaker_opens_fails_fast_probes_and_closes() -> None:
    clock = VirtualTime()
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker("voice", failure_threshold=3, reset_timeout=30, clock=clock, on_change=lambda n, a, b: changes.append((a, b)))
    failing = Provider(transient())
    for _ in range(3):
        with pytest.raises(ProviderError):
            run(call(failing, breaker, deadline=clock() + 0.1, clock=clock, sleep=clock.sleep))
    assert breaker.state == OPEN and changes == [(CLOSED, OPEN)]
    calls = failing.calls
    with pytest.raises(BreakerOpen, match="breaker open: voice"):
        run(call(failing, breaker, deadline=clock() + 60, clock=clock, sleep=clock.sleep))
    assert failing.calls == calls  # failed fast: the provider was not called
    clock.now += 30  # cool-down over: one probe
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow()  # only one probe at a time
    breaker.failure()  # the probe failed: open again, for another cool-down
    assert breaker.state == OPEN and not breaker.allow()
    clock.now += 30
    healthy = Provider("ok")
    assert run(call(healthy, breaker, deadline=clock() + 60, clock=clock, sleep=clock.sleep)) == "ok"
    assert breaker.state == CLOSED
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_successes_reset_the_failure_count() -> None:
    clock = VirtualTime()
    breaker = CircuitBreaker("push", failure_threshold=3, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    from tenacity import RetryCallState

    wait = backoff(initial=0.5, maximum=8.0, rng=lambda: 1.0)
    state = RetryCallState(None, None, (), {})
    values = []
    for attempt in range(1, 8):
        state.attempt_number = attempt
        values.append(wait(state))
    assert values == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    low = backoff(initial=0.5, maximum=8.0, rng=lambda: 0.0)
    state.attempt_number = 3
    assert low(state) == 1.0  # full jitter keeps at least half the step


def test_a_cancelled_probe_does_not_leave_the_breaker_stuck_half_open() -> None:
    clock = VirtualTime()
    breaker = CircuitBreaker("voice", failure_threshold=1, reset_timeout=30, clock=clock)
    breaker.failure()
    clock.now += 30

    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    async def cut_off() -> None:
        task = asyncio.ensure_future(call(hang, breaker, deadline=clock() + 60, clock=clock, sleep=clock.sleep))
        await asyncio.sleep(0)
        assert breaker.state == HALF_OPEN
        task.cancel()  # what the engine's window timeout does to a hung page
        with pytest.raises(asyncio.CancelledError):
            await task

    run(cut_off())
    assert breaker.state == HALF_OPEN and breaker.allow()  # not counted against the provider; the probe is free again
    breaker.release()
    assert run(call(Provider("ok"), breaker, deadline=clock() + 60, clock=clock, sleep=clock.sleep)) == "ok"
    assert breaker.state == CLOSED


def test_cancelled_calls_never_count_as_provider_failures() -> None:
    """Pages stopped because someone took the incident are not the provider's failures: five such
    stops in a row must not open a breaker against a provider nothing is wrong with."""
    clock = VirtualTime()
    breaker = CircuitBreaker("voice", failure_threshold=5, clock=clock)

    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    async def stops() -> None:
        for _ in range(10):
            task = asyncio.ensure_future(call(hang, breaker, deadline=clock() + 60, clock=clock, sleep=clock.sleep))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(stops())
    assert breaker.state == CLOSED and breaker.failures == 0


def test_a_provider_silent_until_the_deadline_is_a_counted_failure() -> None:
    breaker = CircuitBreaker("sms", failure_threshold=1)

    async def hang() -> str:
        await asyncio.Event().wait()
        return "never"

    with pytest.raises(ProviderError, match="no answer from the provider"):
        run(call(hang, breaker, deadline=time.monotonic() + 0.2))  # a moment left: not a fair test of it
    assert breaker.state == CLOSED and breaker.failures == 0
    with pytest.raises(ProviderError, match="no answer from the provider"):
        run(call(hang, breaker, deadline=time.monotonic() + 1.2))
    assert breaker.state == OPEN


def test_an_unexpected_error_releases_the_probe_too() -> None:
    clock = VirtualTime()
    breaker = CircuitBreaker("push", failure_threshold=1, reset_timeout=30, clock=clock)
    breaker.failure()
    clock.now += 30
    with pytest.raises(KeyError):
        run(call(Provider(KeyError("bug")), breaker, deadline=clock() + 60, clock=clock, sleep=clock.sleep))
    clock.now += 30
    assert breaker.allow()
