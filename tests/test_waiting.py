"""Waiting in threads: ``record_wait`` and ``reserve_wait`` block until a call fits.

These tests run on the real monotonic clock with windows of about a second.
Their tolerances are wide because the machine may be busy: they check when a
waiter is admitted (at once, after about a second, before a record would have
aged out), never how fast anything runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from llm_budget_window import (
    Axis,
    Reservation,
    WaitTimeout,
    Window,
    WindowBreached,
)

if TYPE_CHECKING:
    from tests.conftest import BudgetFactory, ManualClock

# Slack for "about" a moment on a shared machine, in seconds.
TOLERANCE = 0.25
# Longest any waiting call in these tests may block before it counts as stuck.
STUCK = 10.0


class RecordingClock:
    """The monotonic clock in seconds, remembering each thread's latest read.

    A call is committed at the time its own clock read gave (or, if another
    call reached the budget first with a later read, that later time), so a
    thread's latest read before a waiting call returns is a lower bound of
    the committed timestamp, and ``time.monotonic()`` after it returns an
    upper bound.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self) -> float:
        now = time.monotonic()
        self._local.last = now
        return now

    def last_read(self) -> float:
        last: float = self._local.last
        return last


class Call(threading.Thread):
    """Run ``function(*args, **kwargs)`` in a daemon thread and keep its outcome."""

    def __init__(
        self,
        function: Callable[..., Any],
        *args: Any,
        clock: RecordingClock | None = None,
        start_together: threading.Barrier | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(daemon=True)
        self._function = function
        self._args = args
        self._kwargs = kwargs
        self._clock = clock
        self._barrier = start_together
        self.result: Any = None
        self.error: BaseException | None = None
        self.started_at = math.nan
        self.committed_after = math.nan
        self.finished_at = math.nan

    def run(self) -> None:
        if self._barrier is not None:
            self._barrier.wait()
        self.started_at = time.monotonic()
        try:
            self.result = self._function(*self._args, **self._kwargs)
            if self._clock is not None:
                self.committed_after = self._clock.last_read()
        except BaseException as exc:  # handed to the test by outcome()
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def outcome(self, timeout: float = STUCK) -> Any:
        """Return the result, re-raise the error, or fail if still blocked."""
        self.join(timeout)
        assert not self.is_alive(), f"still blocked after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result

    @property
    def elapsed(self) -> float:
        return self.finished_at - self.started_at


def wait_for_queue(budget: Any, length: int) -> None:
    """Block until ``length`` waiters are queued on ``budget``."""
    # The queue is private; polling it makes arrival order certain instead
    # of hoping that a sleep was long enough.
    deadline = time.monotonic() + STUCK
    while len(budget._queue) != length:
        assert time.monotonic() < deadline, f"never saw {length} waiters queued"
        time.sleep(0.002)


# -- admission over time -------------------------------------------------------


def test_five_waiters_on_two_per_second_are_admitted_at_0_0_1_1_and_2_seconds(
    make_budget: BudgetFactory,
) -> None:
    clock = RecordingClock()
    budget = make_budget([Window("second", 1, request_cap=2)], clock=clock)
    start = threading.Barrier(6)
    calls = [
        Call(budget.record_wait, 0, clock=clock, start_together=start, timeout=STUCK)
        for _ in range(5)
    ]
    for call in calls:
        call.start()
    started = time.monotonic()
    start.wait()

    for call in calls:
        call.outcome()

    admitted = sorted(call.finished_at - started for call in calls)
    for offset, expected in zip(admitted, [0, 0, 1, 1, 2], strict=True):
        assert expected - TOLERANCE <= offset <= expected + TOLERANCE, admitted


def test_five_waiters_on_two_per_second_never_put_three_in_one_second(
    make_budget: BudgetFactory,
) -> None:
    clock = RecordingClock()
    budget = make_budget([Window("second", 1, request_cap=2)], clock=clock)
    start = threading.Barrier(5)
    calls = [
        Call(budget.record_wait, 0, clock=clock, start_together=start, timeout=STUCK)
        for _ in range(5)
    ]
    for call in calls:
        call.start()
    for call in calls:
        call.outcome()

    # Each committed timestamp lies in [committed_after, finished_at].
    bounds = sorted((call.committed_after, call.finished_at) for call in calls)
    for first, third in zip(bounds, bounds[2:], strict=False):
        # A third call within one second of the first of three breaks the cap;
        # the bounds can only understate the gap, by the time a thread takes
        # between its clock read, its commit and its return.
        assert third[0] - first[1] >= 1.0 - 0.05, bounds


def test_waiter_whose_room_comes_within_its_timeout_succeeds(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("short", 0.6, request_cap=1)])
    budget.record(0)
    call = Call(budget.record_wait, 0, timeout=0.9)
    call.start()

    assert call.outcome() is None

    assert 0.6 - TOLERANCE <= call.elapsed <= 0.9 + TOLERANCE
    assert budget.snapshot()[0].requests_used == 1


def test_record_wait_on_a_budget_with_room_records_at_once(
    make_budget: BudgetFactory, clock: ManualClock
) -> None:
    budget = make_budget([Window("minute", 60, token_cap=100)], clock=clock)
    call = Call(budget.record_wait, 40, "0.04", timeout=0)
    call.start()

    assert call.outcome() is None

    [snapshot] = budget.snapshot()
    assert (snapshot.tokens_used, snapshot.usd_used, snapshot.requests_used) == (
        40,
        0.04,
        1,
    )


def test_reserve_wait_returns_an_open_reservation_that_settles(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("short", 0.5, token_cap=100)])
    budget.record(100)
    call = Call(budget.reserve_wait, 60, timeout=STUCK)
    call.start()

    reservation = call.outcome()
    assert isinstance(reservation, Reservation)
    assert reservation.state == "open"
    assert budget.snapshot()[0].tokens_used == 60

    reservation.settle(25)

    assert budget.snapshot()[0].tokens_used == 25


# -- giving up at once ---------------------------------------------------------


def test_waiter_with_timeout_shorter_than_needed_wait_fails_at_once(
    make_budget: BudgetFactory, clock: ManualClock
) -> None:
    budget = make_budget([Window("five-seconds", 5, request_cap=1)], clock=clock)
    budget.record(0)
    call = Call(budget.record_wait, 0, timeout=2.0)
    call.start()

    with pytest.raises(WaitTimeout) as caught:
        call.outcome()

    # "At once": well before the 2 s timeout it was given.
    assert call.elapsed < 1.0
    assert isinstance(caught.value, TimeoutError)
    breach = caught.value.breach
    assert breach is not None
    assert breach.window_name == "five-seconds"
    assert breach.axis is Axis.REQUESTS
    assert breach.used == 1
    assert breach.cap == 1
    assert breach.retry_after == 5.0
    assert caught.value.retry_after == 5.0
    assert budget.snapshot()[0].requests_used == 1


def test_reserve_wait_with_timeout_shorter_than_needed_wait_fails_at_once(
    make_budget: BudgetFactory, clock: ManualClock
) -> None:
    budget = make_budget([Window("minute", 60, token_cap=100)], clock=clock)
    budget.record(80)
    clock.advance(20)
    call = Call(budget.reserve_wait, 30, timeout=39.5)
    call.start()

    with pytest.raises(WaitTimeout) as caught:
        call.outcome()

    assert call.elapsed < 1.0
    assert caught.value.retry_after == 40.0
    assert caught.value.breach is not None
    assert caught.value.breach.axis is Axis.TOKENS
    assert budget.snapshot()[0].tokens_used == 80


def test_waiter_queued_past_its_timeout_gets_wait_timeout_without_a_breach(
    make_budget: BudgetFactory, clock: ManualClock
) -> None:
    budget = make_budget([Window("five-seconds", 5, request_cap=1)], clock=clock)
    budget.record(0)
    head = Call(budget.record_wait, 0, timeout=None)
    head.start()
    wait_for_queue(budget, 1)
    behind = Call(budget.record_wait, 0, timeout=0.3)
    behind.start()

    with pytest.raises(WaitTimeout) as caught:
        behind.outcome()

    assert caught.value.breach is None
    assert caught.value.retry_after is None
    assert 0.3 - TOLERANCE <= behind.elapsed <= 0.3 + 2 * TOLERANCE
    assert len(budget._queue) == 1
    # Freeing room lets the head through; the one that gave up took nothing.
    budget.reset()
    head.outcome()
    assert budget.snapshot()[0].requests_used == 1


@pytest.mark.parametrize(
    ("window", "tokens"),
    [
        (Window("w", 1, token_cap=10), 11),
        (Window("w", 1, request_cap=0), 0),
    ],
    ids=["tokens-above-cap", "request-cap-zero"],
)
@pytest.mark.parametrize("timeout", [None, 5.0], ids=["no-timeout", "timeout"])
def test_never_fitting_request_raises_window_breached_at_once(
    make_budget: BudgetFactory, window: Window, tokens: int, timeout: float | None
) -> None:
    budget = make_budget([window])
    call = Call(budget.record_wait, tokens, timeout=timeout)
    call.start()

    with pytest.raises(WindowBreached) as caught:
        call.outcome()

    assert call.elapsed < 1.0
    assert caught.value.retry_after == math.inf
    assert len(budget._queue) == 0
    assert budget.snapshot()[0].requests_used == 0


def test_never_fitting_request_raises_at_once_even_behind_a_waiter(
    make_budget: BudgetFactory, clock: ManualClock
) -> None:
    budget = make_budget([Window("w", 5, token_cap=10)], clock=clock)
    budget.record(10)
    head = Call(budget.record_wait, 10, timeout=None)
    head.start()
    wait_for_queue(budget, 1)
    hopeless = Call(budget.reserve_wait, 11, timeout=None)
    hopeless.start()

    with pytest.raises(WindowBreached):
        hopeless.outcome()

    assert hopeless.elapsed < 1.0
    budget.reset()
    head.outcome()


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(-1, ValueError), (math.nan, ValueError), ("1", TypeError), (True, TypeError)],
    ids=["negative", "nan", "str", "bool"],
)
def test_bad_timeout_raises_naming_it_and_records_nothing(
    make_budget: BudgetFactory, timeout: object, error: type[Exception]
) -> None:
    budget = make_budget([Window("w", 1, token_cap=10)])

    with pytest.raises(error, match="timeout"):
        budget.record_wait(1, timeout=timeout)

    assert budget.snapshot()[0].requests_used == 0
    assert len(budget._queue) == 0


def test_bad_tokens_to_record_wait_raise_and_leave_no_waiter(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 1, token_cap=10)])

    with pytest.raises(ValueError, match="tokens"):
        budget.record_wait(-1, timeout=1)

    assert len(budget._queue) == 0
    assert budget.snapshot()[0].requests_used == 0


# -- order ---------------------------------------------------------------------


def test_large_request_queued_before_a_stream_of_small_ones_is_admitted_first(
    make_budget: BudgetFactory,
) -> None:
    clock = RecordingClock()
    budget = make_budget([Window("second", 1, token_cap=10)], clock=clock)
    budget.record(5)
    large = Call(budget.record_wait, 6, clock=clock, timeout=STUCK)
    large.start()
    wait_for_queue(budget, 1)
    smalls = []
    for queued in range(2, 6):
        # Each small one fits at once (5 + 4 <= 10), were it allowed to overtake.
        small = Call(budget.record_wait, 1, clock=clock, timeout=STUCK)
        small.start()
        wait_for_queue(budget, queued)
        smalls.append(small)
        time.sleep(0.05)

    large.outcome()
    for small in smalls:
        small.outcome()

    # A waiter reads the clock for its commit only after the one before it
    # has committed, so these reads give the commit order.
    reads = [large.committed_after] + [small.committed_after for small in smalls]
    assert reads == sorted(reads)
    assert 1.0 - TOLERANCE <= large.elapsed <= 1.0 + TOLERANCE
    assert budget.snapshot()[0].tokens_used == 10


def test_release_by_another_thread_wakes_the_head_waiter_early(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("five-seconds", 5, request_cap=1)])
    reservation = budget.reserve(0)
    waiter = Call(budget.record_wait, 0, timeout=STUCK)
    waiter.start()
    wait_for_queue(budget, 1)
    time.sleep(0.2)

    releaser = Call(reservation.release)
    releaser.start()
    releaser.outcome()
    waiter.outcome()

    # Admitted long before the reserved call would have aged out (5 s).
    assert waiter.finished_at - releaser.started_at < 1.0
    assert budget.snapshot()[0].requests_used == 1


def test_settling_down_wakes_the_head_waiter_early(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("five-seconds", 5, token_cap=10)])
    reservation = budget.reserve(10)
    waiter = Call(budget.record_wait, 6, timeout=STUCK)
    waiter.start()
    wait_for_queue(budget, 1)
    time.sleep(0.2)

    settled_at = time.monotonic()
    reservation.settle(4)
    waiter.outcome()

    assert waiter.finished_at - settled_at < 1.0
    assert budget.snapshot()[0].tokens_used == 10


def test_reset_wakes_the_head_waiter_early(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("five-seconds", 5, request_cap=1)])
    budget.record(0)
    waiter = Call(budget.record_wait, 0, timeout=STUCK)
    waiter.start()
    wait_for_queue(budget, 1)
    time.sleep(0.2)

    reset_at = time.monotonic()
    budget.reset()
    waiter.outcome()

    assert waiter.finished_at - reset_at < 1.0
    assert budget.snapshot()[0].requests_used == 1
