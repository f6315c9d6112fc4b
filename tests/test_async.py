"""Waiting in asyncio: ``arecord`` and ``areserve`` suspend a task until a call fits.

Each test drives its own event loop with ``asyncio.run``. Windows are short
and tolerances wide: the tests check what happens and in which order, never
how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from llm_budget_window import (
    AsyncReservation,
    Axis,
    Reservation,
    WaitTimeout,
    Window,
    WindowBreached,
)

if TYPE_CHECKING:
    from tests.conftest import BudgetFactory, ManualClock

TOLERANCE = 0.25
STUCK = 10.0


async def queued(budget: Any, length: int) -> None:
    """Suspend until ``length`` waiters are queued on ``budget``."""
    # The queue is private; polling it makes arrival order certain.
    deadline = time.monotonic() + STUCK
    while len(budget._queue) != length:
        assert time.monotonic() < deadline, f"never saw {length} waiters queued"
        await asyncio.sleep(0.002)


def usage(budget: Any) -> list[tuple[int, float, int]]:
    return [(s.tokens_used, s.usd_used, s.requests_used) for s in budget.snapshot()]


# -- arecord -------------------------------------------------------------------


def test_arecord_records_at_once_when_the_call_fits(
    make_budget: BudgetFactory, clock: ManualClock
) -> None:
    budget = make_budget([Window("minute", 60, token_cap=100)], clock=clock)

    asyncio.run(budget.arecord(40, "0.04", timeout=0))

    assert usage(budget) == [(40, 0.04, 1)]


def test_arecord_waits_until_the_call_fits(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("short", 0.5, request_cap=1)])
    budget.record(0)
    started = time.monotonic()

    asyncio.run(budget.arecord(7, timeout=STUCK))

    assert 0.5 - TOLERANCE <= time.monotonic() - started <= 0.5 + TOLERANCE
    assert usage(budget) == [(7, 0.0, 1)]


def test_arecord_with_timeout_shorter_than_needed_wait_fails_at_once(
    make_budget: BudgetFactory, clock: ManualClock
) -> None:
    budget = make_budget([Window("five-seconds", 5, request_cap=1)], clock=clock)
    budget.record(0)
    started = time.monotonic()

    with pytest.raises(WaitTimeout) as caught:
        asyncio.run(budget.arecord(0, timeout=2.0))

    assert time.monotonic() - started < 1.0
    assert caught.value.retry_after == 5.0
    assert caught.value.breach is not None
    assert caught.value.breach.axis is Axis.REQUESTS
    assert usage(budget) == [(0, 0.0, 1)]


def test_arecord_of_a_never_fitting_call_raises_window_breached_at_once(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 1, token_cap=10)])
    started = time.monotonic()

    with pytest.raises(WindowBreached) as caught:
        asyncio.run(budget.arecord(11, timeout=None))

    assert time.monotonic() - started < 1.0
    assert caught.value.retry_after == math.inf
    assert usage(budget) == [(0, 0.0, 0)]


# -- areserve ------------------------------------------------------------------


def test_async_with_areserve_holds_an_open_reservation_that_settles(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("minute", 60, token_cap=1_000)])
    inside: list[list[tuple[int, float, int]]] = []

    async def call_the_model() -> Reservation:
        async with budget.areserve(100, "0.10", timeout=STUCK) as reservation:
            inside.append(usage(budget))
            reservation.settle(60, "0.06")
        return reservation

    reservation = asyncio.run(call_the_model())

    assert inside == [[(100, 0.1, 1)]]
    assert reservation.state == "settled"
    assert usage(budget) == [(60, 0.06, 1)]


def test_normal_exit_from_async_with_areserve_keeps_the_estimate(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("minute", 60, token_cap=1_000)])

    async def call_the_model() -> Reservation:
        async with budget.areserve(100, "0.10") as reservation:
            await asyncio.sleep(0)
        return reservation

    reservation = asyncio.run(call_the_model())

    assert reservation.state == "open"
    assert usage(budget) == [(100, 0.1, 1)]


def test_exception_inside_async_with_areserve_releases_then_propagates(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("minute", 60, token_cap=1_000)])
    budget.record(5)
    held: list[Reservation] = []

    async def call_the_model() -> None:
        async with budget.areserve(100, "0.10") as reservation:
            held.append(reservation)
            raise ConnectionError("model unavailable")

    with pytest.raises(ConnectionError, match="model unavailable"):
        asyncio.run(call_the_model())

    assert held[0].state == "released"
    assert usage(budget) == [(5, 0.0, 1)]


def test_awaiting_areserve_returns_an_open_reservation(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("short", 0.5, token_cap=100)])
    budget.record(100)

    async def reserve() -> Reservation:
        pending = budget.areserve(30, timeout=STUCK)
        assert isinstance(pending, AsyncReservation)
        return await pending

    reservation = asyncio.run(reserve())

    assert reservation.state == "open"
    assert usage(budget) == [(30, 0.0, 1)]


# -- cancellation --------------------------------------------------------------


def test_cancelled_head_waiter_commits_nothing_and_the_next_waiter_proceeds(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("five-seconds", 5, request_cap=1)])
    blocker = budget.reserve(0)

    async def scenario() -> None:
        first = asyncio.create_task(budget.arecord(1, timeout=STUCK))
        await queued(budget, 1)
        second = asyncio.create_task(budget.arecord(2, timeout=STUCK))
        await queued(budget, 2)

        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        assert first.cancelled()
        assert len(budget._queue) == 1
        assert usage(budget) == [(0, 0.0, 1)]

        blocker.release()
        # Well before the reserved call would have aged out (5 s).
        await asyncio.wait_for(second, 2.0)

    asyncio.run(scenario())

    assert usage(budget) == [(2, 0.0, 1)]
    assert len(budget._queue) == 0


def test_cancelled_waiter_in_the_middle_of_the_queue_does_not_block_the_ones_behind(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("five-seconds", 5, token_cap=10)])
    blocker = budget.reserve(10)

    async def scenario() -> None:
        tasks = []
        for length in (1, 2, 3):
            tasks.append(asyncio.create_task(budget.arecord(5, timeout=STUCK)))
            await queued(budget, length)
        first, middle, last = tasks

        middle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await middle
        blocker.release()
        await asyncio.wait_for(asyncio.gather(first, last), 2.0)

    asyncio.run(scenario())

    assert usage(budget) == [(10, 0.0, 2)]
    assert len(budget._queue) == 0


def test_cancelled_areserve_waiter_leaves_no_reservation(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("five-seconds", 5, request_cap=1)])
    blocker = budget.reserve(0)

    async def scenario() -> None:
        async def hold() -> None:
            async with budget.areserve(50, timeout=STUCK):
                pass

        task = asyncio.create_task(hold())
        await queued(budget, 1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(scenario())
    blocker.release()

    assert usage(budget) == [(0, 0.0, 0)]
    assert len(budget._queue) == 0


# -- many tasks, one loop ------------------------------------------------------


def test_thousand_concurrent_tasks_on_one_budget_all_complete_with_exact_counts(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget(
        [
            Window("half-second", 0.5, request_cap=500),
            Window("minute", 60),
        ]
    )

    async def record(i: int) -> None:
        await budget.arecord(i % 10, "0.001", timeout=STUCK)

    async def reserve_and_settle(i: int) -> None:
        async with budget.areserve(100, "0.01", timeout=STUCK) as reservation:
            await asyncio.sleep(0)
            reservation.settle(i % 10, "0.001")

    async def scenario() -> None:
        await asyncio.gather(
            *(record(i) if i % 2 else reserve_and_settle(i) for i in range(1_000))
        )

    asyncio.run(scenario())

    half_second, minute = budget.snapshot()
    assert minute.requests_used == 1_000
    assert minute.tokens_used == sum(i % 10 for i in range(1_000))
    assert minute.usd_used == 1.0
    assert half_second.requests_used <= 500
    assert len(budget._queue) == 0


def test_event_loop_keeps_ticking_while_a_task_waits(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("second", 1, request_cap=1)])
    budget.record(0)
    period = 0.02
    ticks: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(period)

    async def scenario() -> tuple[float, float]:
        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(stop))
        await asyncio.sleep(0)
        began = time.monotonic()
        await budget.arecord(0, timeout=STUCK)
        ended = time.monotonic()
        stop.set()
        await ticking
        return began, ended

    began, ended = asyncio.run(scenario())

    during = [t for t in ticks if began <= t <= ended]
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert ended - began >= 1.0 - TOLERANCE
    # About 50 ticks are due in one second; a blocked loop would show none.
    assert len(during) >= 10
    assert max(gaps) < 0.5
    assert usage(budget) == [(0, 0.0, 1)]


def test_thread_and_task_waiters_share_one_first_in_first_out_queue(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("second", 1, token_cap=10)])
    budget.record(5)
    thread = threading.Thread(
        target=budget.record_wait, args=(6,), kwargs={"timeout": STUCK}, daemon=True
    )
    thread.start()

    async def small_call() -> int:
        await queued(budget, 1)
        # 5 + 1 fits at once, but the thread's 6 tokens arrived first.
        await budget.arecord(1, timeout=STUCK)
        tokens: int = budget.snapshot()[0].tokens_used
        return tokens

    tokens_when_admitted = asyncio.run(small_call())
    thread.join(STUCK)

    assert not thread.is_alive()
    # The first 5 tokens had aged out and the thread's 6 were in before the 1.
    assert tokens_when_admitted == 7
