"""Waiting on the Redis backend: on the server's clock, and in asyncio.

The thread waiting suite (``test_waiting.py``) runs on Redis with the test's
clock passed as ``now=``. These tests wait on the server's own clock, and
drive ``AsyncRedisBudgetWindows``'s ``arecord`` and ``areserve``, whose round
trips are awaited. Windows are short and tolerances wide: the tests check
what happens and in which order, never how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio

from llm_budget_window import WaitTimeout, Window, WindowBreached
from llm_budget_window.redis import (
    AsyncRedisBudgetWindows,
    AsyncRedisReservation,
    RedisBudgetWindows,
    read_records,
)

from .redis_server import unique_name

pytestmark = pytest.mark.redis

TOLERANCE = 0.25
STUCK = 10.0

Scenario = Callable[[AsyncRedisBudgetWindows], Awaitable[Any]]


def run_async(redis_url: str, windows: list[Window], scenario: Scenario) -> Any:
    """Run ``scenario(budget)`` on a fresh asyncio budget and its own loop."""

    async def main() -> Any:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            redis_url, max_connections=20
        )
        client = redis.asyncio.Redis.from_pool(pool)
        budget = AsyncRedisBudgetWindows(client, unique_name(), windows)
        try:
            return await scenario(budget)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def queued(budget: AsyncRedisBudgetWindows, length: int) -> None:
    """Suspend until ``length`` waiters are queued on ``budget``."""
    deadline = time.monotonic() + STUCK
    while len(budget._queue) != length:
        assert time.monotonic() < deadline, f"never saw {length} waiters queued"
        await asyncio.sleep(0.002)


async def used(budget: AsyncRedisBudgetWindows) -> list[tuple[int, int]]:
    return [(s.tokens_used, s.requests_used) for s in await budget.snapshot()]


# -- the sync class, on the server's clock -------------------------------------


def test_record_wait_sleeps_until_the_servers_clock_ages_the_record_out(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(
        redis_client, unique_name(), [Window("half-second", 0.5, request_cap=1)]
    )
    budget.record(0)
    started = time.monotonic()

    budget.record_wait(0, timeout=STUCK)

    assert 0.5 - TOLERANCE < time.monotonic() - started < 0.5 + TOLERANCE
    assert [s.requests_used for s in budget.snapshot()] == [1]


def test_reserve_wait_on_the_servers_clock_returns_a_reservation_that_settles(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(
        redis_client, unique_name(), [Window("half-second", 0.5, token_cap=10)]
    )
    budget.record(10)

    reservation = budget.reserve_wait(10, timeout=STUCK)
    reservation.settle(4)

    assert [s.tokens_used for s in budget.snapshot()] == [4]


# -- arecord -------------------------------------------------------------------


def test_arecord_records_at_once_when_the_call_fits(redis_url: str) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        await budget.arecord(40, timeout=0)
        return await used(budget)

    windows = [Window("minute", 60, token_cap=100)]
    assert run_async(redis_url, windows, scenario) == [(40, 1)]


def test_arecord_waits_until_the_call_fits(redis_url: str) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        await budget.record(0)
        started = time.monotonic()
        await budget.arecord(0, timeout=STUCK)
        return time.monotonic() - started, await used(budget)

    windows = [Window("half-second", 0.5, request_cap=1)]
    waited, usage = run_async(redis_url, windows, scenario)
    assert 0.5 - TOLERANCE < waited < 0.5 + TOLERANCE
    assert usage == [(0, 1)]


def test_arecord_with_timeout_shorter_than_needed_wait_fails_at_once(
    redis_url: str,
) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        await budget.record(0)
        started = time.monotonic()
        with pytest.raises(WaitTimeout) as raised:
            await budget.arecord(0, timeout=1)
        return time.monotonic() - started, raised.value.breach, await used(budget)

    windows = [Window("minute", 60, request_cap=1)]
    waited, breach, usage = run_async(redis_url, windows, scenario)
    assert waited < TOLERANCE
    assert breach.window_name == "minute"
    assert 59 < breach.retry_after <= 60
    assert usage == [(0, 1)]


def test_arecord_of_a_never_fitting_call_raises_window_breached_at_once(
    redis_url: str,
) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        with pytest.raises(WindowBreached) as raised:
            await budget.arecord(101, timeout=STUCK)
        return raised.value.retry_after, len(budget._queue), await used(budget)

    windows = [Window("minute", 60, token_cap=100)]
    assert run_async(redis_url, windows, scenario) == (float("inf"), 0, [(0, 0)])


def test_record_wait_is_arecord(redis_url: str) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        await budget.record_wait(3, timeout=0)
        reservation = await budget.reserve_wait(4, timeout=0)
        return type(reservation), await used(budget)

    windows = [Window("minute", 60)]
    assert run_async(redis_url, windows, scenario) == (
        AsyncRedisReservation,
        [(7, 2)],
    )


# -- areserve ------------------------------------------------------------------


def test_async_with_areserve_holds_an_open_reservation_that_settles(
    redis_url: str,
) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        async with budget.areserve(100, timeout=0) as reservation:
            assert reservation.state == "open"
            assert await used(budget) == [(100, 1)]
            await reservation.settle(30)
        return reservation.state, await used(budget)

    windows = [Window("minute", 60, token_cap=100)]
    assert run_async(redis_url, windows, scenario) == ("settled", [(30, 1)])


def test_exception_inside_async_with_areserve_releases_then_propagates(
    redis_url: str,
) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        held = []

        async def call_the_model() -> None:
            async with budget.areserve(100, timeout=0) as reservation:
                held.append(reservation)
                raise ConnectionError("model unavailable")

        with pytest.raises(ConnectionError, match="model unavailable"):
            await call_the_model()
        return held[0].state, await used(budget)

    windows = [Window("minute", 60, token_cap=100)]
    assert run_async(redis_url, windows, scenario) == ("released", [(0, 0)])


def test_awaiting_areserve_returns_an_open_reservation(redis_url: str) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        reservation = await budget.areserve(100, timeout=0)
        return type(reservation), reservation.state, await used(budget)

    windows = [Window("minute", 60)]
    assert run_async(redis_url, windows, scenario) == (
        AsyncRedisReservation,
        "open",
        [(100, 1)],
    )


# -- first in, first out; early wake-ups; cancellation -------------------------


def test_release_wakes_the_head_waiter_early_and_waiters_are_served_in_order(
    redis_url: str,
) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        blocker = await budget.reserve(10)
        order: list[int] = []

        async def wait(tokens: int) -> None:
            await budget.arecord(tokens, timeout=STUCK)
            order.append(tokens)

        tasks = []
        for length, tokens in enumerate((6, 4), start=1):
            tasks.append(asyncio.create_task(wait(tokens)))
            await queued(budget, length)
        started = time.monotonic()
        await blocker.release()
        await asyncio.wait_for(asyncio.gather(*tasks), STUCK)
        return time.monotonic() - started, order, await used(budget)

    windows = [Window("five-seconds", 5, token_cap=10)]
    waited, order, usage = run_async(redis_url, windows, scenario)
    assert waited < TOLERANCE * 4
    assert order == [6, 4]
    assert usage == [(10, 2)]


def test_ninety_waiters_are_admitted_in_the_order_of_their_calls(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        await asyncio.gather(
            *(budget.arecord(tokens, timeout=STUCK) for tokens in range(1, 91))
        )
        return budget.key

    key = run_async(redis_url, [Window("minute", 60)], scenario)
    records = read_records(redis_client, key)
    assert [tokens for _, tokens, _ in records] == list(range(1, 91))


def test_three_hundred_concurrent_arecords_on_a_default_client_all_succeed(
    redis_url: str,
) -> None:
    async def main() -> Any:
        # redis-py's default asyncio pool refuses a 101st connection; only
        # the head waiter holds one.
        client = redis.asyncio.Redis.from_url(redis_url)
        budget = AsyncRedisBudgetWindows(client, unique_name(), [Window("minute", 60)])
        try:
            await asyncio.gather(
                *(budget.arecord(1, timeout=STUCK) for _ in range(300))
            )
            return len(budget._queue), await used(budget)
        finally:
            await client.aclose()

    assert asyncio.run(main()) == (0, [(300, 300)])


def test_cancelled_waiter_commits_nothing_and_the_next_waiter_proceeds(
    redis_url: str,
) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        blocker = await budget.reserve(0)
        first = asyncio.create_task(budget.arecord(1, timeout=STUCK))
        await queued(budget, 1)
        second = asyncio.create_task(budget.arecord(2, timeout=STUCK))
        await queued(budget, 2)

        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        assert await used(budget) == [(0, 1)]
        await blocker.release()
        await asyncio.wait_for(second, STUCK)
        return first.cancelled(), len(budget._queue), await used(budget)

    windows = [Window("five-seconds", 5, request_cap=1)]
    assert run_async(redis_url, windows, scenario) == (True, 0, [(2, 1)])


def test_waiter_cancelled_while_its_round_trip_is_in_flight_commits_nothing(
    redis_url: str,
) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        # Cancel each attempt at a different point of its round trip; an
        # admitted one must be released once Redis has answered.
        for delay in (0, 0.0001, 0.0003, 0.001, 0.003):
            task = asyncio.create_task(budget.arecord(5, timeout=STUCK))
            await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while budget._cleanups:
            await asyncio.sleep(0.01)
        return len(budget._queue), await used(budget)

    windows = [Window("minute", 60)]
    queue_length, usage = run_async(redis_url, windows, scenario)
    assert queue_length == 0
    # Cancelled tasks committed nothing; any that finished before the
    # cancellation took effect counted 5 tokens each.
    tokens, requests = usage[0]
    assert tokens == 5 * requests


def test_a_thousand_tasks_reserving_and_recording_keep_exact_counts(
    redis_url: str,
) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        async def record(i: int) -> None:
            await budget.arecord(i % 10, timeout=STUCK)

        async def reserve_and_settle(i: int) -> None:
            async with budget.areserve(100, timeout=STUCK) as reservation:
                await asyncio.sleep(0)
                await reservation.settle(i % 10)

        await asyncio.gather(
            *(record(i) if i % 2 else reserve_and_settle(i) for i in range(1_000))
        )
        return len(budget._queue), await used(budget)

    windows = [Window("minute", 60)]
    expected = (0, [(sum(i % 10 for i in range(1_000)), 1_000)])
    assert run_async(redis_url, windows, scenario) == expected
