"""Waiting for room: block a thread, or suspend a task, until a request fits.

One implementation serves every engine; it only calls the engine's public
``check``, ``try_record`` and ``reserve`` (or, through ``wait_for_room``,
awaitable forms of them, for a backend whose calls are I/O). Waiters on one
budget form one first-in, first-out queue shared by threads and asyncio
tasks: only the waiter at the head tries to commit, so a later small request
never overtakes an earlier large one. Nothing here holds an engine's mutex
while waiting.

Calls that do not wait (``record``, ``try_record``, ``reserve``) are not
queued: they take whatever room there is, as they always do.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ._reservation import Reservation
from ._types import Breach, Number, WindowBreached

__all__ = ["WaitQueue", "WaitTimeout"]

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """Raised when a request cannot fit before the waiting call's timeout.

    ``breach`` is the Breach that kept the request out at the moment the
    waiter gave up, or None when it gave up still queued behind earlier
    waiters. ``retry_after`` (seconds) is the breach's, or None.
    """

    def __init__(self, message: str, breach: Breach | None) -> None:
        super().__init__(message)
        self.breach = breach

    @property
    def retry_after(self) -> float | None:
        return None if self.breach is None else self.breach.retry_after


class _Waiter(Protocol):
    def wake(self) -> None: ...


class _ThreadWaiter:
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def wake(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float | None) -> None:
        self._event.wait(timeout)


class _TaskWaiter:
    __slots__ = ("_event", "_loop")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def wake(self) -> None:
        # Any thread may wake a task; the event belongs to the task's loop.
        # A closed loop raises RuntimeError: its task is gone and needs no wake.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float | None) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class WaitQueue:
    """The first-in, first-out queue of waiters on one budget."""

    __slots__ = ("_lock", "_waiters")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    def __len__(self) -> int:
        return len(self._waiters)

    def join(self, waiter: _Waiter) -> None:
        with self._lock:
            self._waiters.append(waiter)
            head = self._waiters[0]
        if head is waiter:
            waiter.wake()

    def leave(self, waiter: _Waiter) -> None:
        with self._lock:
            was_head = bool(self._waiters) and self._waiters[0] is waiter
            self._waiters.remove(waiter)
            head = self._waiters[0] if (was_head and self._waiters) else None
        if head is not None:
            head.wake()

    def is_head(self, waiter: _Waiter) -> bool:
        with self._lock:
            return bool(self._waiters) and self._waiters[0] is waiter

    def poke(self) -> None:
        """Wake the head waiter: room may have been freed early."""
        with self._lock:
            head = self._waiters[0] if self._waiters else None
        if head is not None:
            head.wake()


class _Budget(Protocol):
    _queue: WaitQueue

    def check(self, tokens: int, usd: Number = 0) -> Breach | None: ...
    def try_record(self, tokens: int, usd: Number = 0) -> Breach | None: ...
    def reserve(self, tokens: int, usd: Number = 0) -> Reservation: ...


def _deadline(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or None, not "
            f"{type(timeout).__name__}: {timeout!r}"
        )
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    return time.monotonic() + timeout


def _never_fits(budget: _Budget, tokens: int, usd: Number) -> None:
    """Validate the request and raise at once if it can never fit."""
    breach = budget.check(tokens, usd)
    if breach is not None and breach.retry_after == math.inf:
        raise WindowBreached(breach)


def _attempt_record(
    budget: _Budget, tokens: int, usd: Number
) -> tuple[None, Breach | None]:
    return None, budget.try_record(tokens, usd)


def _attempt_reserve(
    budget: _Budget, tokens: int, usd: Number
) -> tuple[Reservation | None, Breach | None]:
    try:
        return budget.reserve(tokens, usd), None
    except WindowBreached as error:
        return None, error.breach


def _after_refusal(breach: Breach, deadline: float | None) -> float:
    """Return how long to sleep after a refusal, or raise if it is hopeless."""
    if breach.retry_after == math.inf:
        raise WindowBreached(breach)
    if deadline is not None and breach.retry_after > deadline - time.monotonic():
        raise WaitTimeout(
            f"window {breach.window_name!r} needs {breach.retry_after!r} s for "
            f"this request, longer than what is left of the timeout",
            breach,
        )
    return breach.retry_after


def _queued_too_long() -> WaitTimeout:
    return WaitTimeout("timed out while queued behind earlier waiters", None)


def wait_in_thread(
    budget: _Budget,
    attempt: Callable[[_Budget, int, Number], tuple[T, Breach | None]],
    tokens: int,
    usd: Number,
    timeout: object,
) -> T:
    """Block this thread until ``attempt`` succeeds at the head of the queue."""
    deadline = _deadline(timeout)
    _never_fits(budget, tokens, usd)
    waiter = _ThreadWaiter()
    queue = budget._queue
    queue.join(waiter)
    try:
        while True:
            if not queue.is_head(waiter):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise _queued_too_long()
                waiter.wait(remaining)
                waiter.clear()
                continue
            waiter.clear()
            result, breach = attempt(budget, tokens, usd)
            if breach is None:
                return result
            waiter.wait(_after_refusal(breach, deadline))
    finally:
        queue.leave(waiter)


async def wait_in_task(
    budget: _Budget,
    attempt: Callable[[_Budget, int, Number], tuple[T, Breach | None]],
    tokens: int,
    usd: Number,
    timeout: object,
) -> T:
    """Suspend this task until ``attempt`` succeeds at the head of the queue.

    The event loop is never blocked. A cancelled task leaves the queue and
    has committed nothing (an attempt runs between two awaits, never across
    one).
    """

    def never_fits() -> None:
        _never_fits(budget, tokens, usd)

    async def attempt_once() -> tuple[T, Breach | None]:
        return attempt(budget, tokens, usd)

    return await wait_for_room(budget._queue, never_fits, attempt_once, timeout)


async def wait_for_room(
    queue: WaitQueue,
    never_fits: Callable[[], None],
    attempt: Callable[[], Awaitable[tuple[T, Breach | None]]],
    timeout: object,
) -> T:
    """Suspend this task in ``queue`` until ``attempt`` succeeds at its head.

    ``never_fits`` validates the request and raises if it can never fit; it
    runs before the task joins the queue and must not await (a backend whose
    calls are I/O only validates there, and learns that a request can never
    fit from its first attempt). The task joins before anything is awaited,
    so tasks are served in the order of their calls, and only the head runs
    ``attempt``: the tasks behind it hold no connection. ``attempt`` commits
    and returns ``(result, None)``, or returns ``(_, breach)`` having
    committed nothing; a breach that can never fit is raised as
    WindowBreached. An attempt that awaits I/O must itself make sure that a
    cancellation during it commits nothing.
    """
    deadline = _deadline(timeout)
    never_fits()
    waiter = _TaskWaiter()
    queue.join(waiter)
    try:
        while True:
            if not queue.is_head(waiter):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise _queued_too_long()
                await waiter.wait(remaining)
                waiter.clear()
                continue
            waiter.clear()
            result, breach = await attempt()
            if breach is None:
                return result
            await waiter.wait(_after_refusal(breach, deadline))
    finally:
        queue.leave(waiter)


def record_wait(budget: Any, tokens: int, usd: Number, timeout: object) -> None:
    wait_in_thread(budget, _attempt_record, tokens, usd, timeout)


def reserve_wait(budget: Any, tokens: int, usd: Number, timeout: object) -> Reservation:
    reservation = wait_in_thread(budget, _attempt_reserve, tokens, usd, timeout)
    assert reservation is not None  # an attempt without a breach reserved
    return reservation


async def arecord(budget: Any, tokens: int, usd: Number, timeout: object) -> None:
    await wait_in_task(budget, _attempt_record, tokens, usd, timeout)


async def _await_reservation(
    budget: Any, tokens: int, usd: Number, timeout: object
) -> Reservation:
    reservation = await wait_in_task(budget, _attempt_reserve, tokens, usd, timeout)
    assert reservation is not None  # an attempt without a breach reserved
    return reservation


class AsyncReservation:
    """What ``areserve`` returns: await it, or use it with ``async with``.

    ``async with budget.areserve(...) as reservation:`` waits for room and
    reserves; leaving the block normally keeps the estimate (or what was
    settled), an exception releases the reservation.
    """

    __slots__ = ("_budget", "_tokens", "_usd", "_timeout", "_reservation")

    def __init__(self, budget: Any, tokens: int, usd: Number, timeout: object) -> None:
        self._budget = budget
        self._tokens = tokens
        self._usd = usd
        self._timeout = timeout
        self._reservation: Reservation | None = None

    def __await__(self) -> Any:
        return _await_reservation(
            self._budget, self._tokens, self._usd, self._timeout
        ).__await__()

    async def __aenter__(self) -> Reservation:
        self._reservation = await self
        return self._reservation

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        reservation = self._reservation
        if reservation is not None:
            reservation.__exit__(exc_type, exc, traceback)
