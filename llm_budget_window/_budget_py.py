"""The pure-Python engine: the reference the compiled core is tested against.

It keeps the same integer state as the compiled core (one ordered log of
records shared by every window, a head and running sums per window) and
follows the same steps in the same order, so both give identical answers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ._reservation import Reservation
from ._types import (
    Breach,
    Number,
    Window,
    WindowBreached,
    WindowSnapshot,
    make_breach,
    make_snapshot,
    overflow_error,
    resolve_now,
    to_tokens,
    usd_to_nanos,
    validate_windows,
    wait_to_seconds,
)
from ._waiting import AsyncReservation, WaitQueue, arecord, record_wait, reserve_wait

__all__ = ["BudgetWindows"]

_INT64_MAX = (1 << 63) - 1
_TOKENS, _NANOS, _REQUESTS = 0, 1, 2

# A released record keeps its place in the log (so that sequence numbers stay
# stable) but counts as nothing; its token field holds this marker.
_RELEASED = -1


class BudgetWindows:
    """Admit a call only if it fits every cap of every window, then commit it.

    ``windows`` is one or more ``Window`` with unique names. ``clock`` is a
    callable returning seconds; by default the monotonic clock is read in
    nanoseconds. Every method is safe to call from many threads at once; the
    clock is never called while the internal lock is held.
    """

    __slots__ = (
        "_windows",
        "_clock",
        "_lock",
        "_durations",
        "_caps",
        "_longest",
        "_records",
        "_base",
        "_next",
        "_heads",
        "_sums",
        "_latest",
        "_queue",
    )

    def __init__(
        self,
        windows: Iterable[Window],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if clock is not None and not callable(clock):
            raise TypeError(
                f"clock must be callable or None, not {type(clock).__name__}"
            )
        self._windows = validate_windows(windows)
        self._clock = clock
        self._lock = threading.Lock()
        self._durations = [w.duration_ns for w in self._windows]
        self._caps = [
            (w.token_cap, w.usd_cap_nanos, w.request_cap) for w in self._windows
        ]
        self._longest = self._durations.index(max(self._durations))
        # _records[k] is the record with sequence number _base + k, as
        # [timestamp ns, tokens, nano-dollars]; _next is the next number.
        self._records: list[list[int]] = []
        self._base = 0
        self._next = 0
        self._heads = [0] * len(self._windows)
        self._sums = [[0, 0, 0] for _ in self._windows]
        self._latest: int | None = None
        self._queue = WaitQueue()

    if not TYPE_CHECKING:  # hidden from type checkers, which it would blind

        def __getattr__(self, name):
            # Reached only for a slot that was never set, which means __init__
            # never ran; the compiled engine raises the same error.
            if name in BudgetWindows.__slots__:
                raise RuntimeError(
                    f"{type(self).__name__}.__init__ was never called, so the "
                    "budget has no windows (a subclass must call super().__init__)"
                )
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            )

    @property
    def windows(self) -> tuple[Window, ...]:
        """The windows, in declaration order."""
        return self._windows

    def __repr__(self) -> str:
        return f"BudgetWindows({list(self._windows)!r})"

    # -- the steps shared by every operation, called with the lock held ------

    def _advance(self, now: int) -> int:
        """Return the effective time (never before the latest seen) and evict."""
        latest = self._latest
        if latest is not None and now < latest:
            now = latest
        self._latest = now
        records = self._records
        base = self._base
        next_seq = self._next
        for i, duration in enumerate(self._durations):
            cutoff = now - duration
            head = self._heads[i]
            sums = self._sums[i]
            while head != next_seq:
                record = records[head - base]
                if record[0] > cutoff:
                    break
                if record[1] != _RELEASED:
                    sums[_TOKENS] -= record[1]
                    sums[_NANOS] -= record[2]
                    sums[_REQUESTS] -= 1
                head += 1
            self._heads[i] = head
        self._trim()
        return now

    def _trim(self) -> None:
        """Drop records that have left every window, in amortised O(1)."""
        dead = self._heads[self._longest] - self._base
        if dead and dead * 2 >= len(self._records):
            del self._records[:dead]
            self._base += dead

    def _find_problem(self, tokens: int, nanos: int) -> tuple[int, int] | None:
        """Return (window, axis) of the first breach or overflow, or None."""
        amounts = (tokens, nanos, 1)
        for i, caps in enumerate(self._caps):
            sums = self._sums[i]
            for axis in (_TOKENS, _NANOS, _REQUESTS):
                cap = caps[axis]
                limit = _INT64_MAX if cap is None else cap
                if amounts[axis] > limit - sums[axis]:
                    return i, axis
        return None

    def _problem_result(
        self, problem: tuple[int, int], tokens: int, nanos: int, now: int
    ) -> Breach:
        """Return the Breach for a problem, or raise if it is an overflow."""
        i, axis = problem
        window = self._windows[i]
        if self._caps[i][axis] is None:
            raise overflow_error(window, axis)
        requested = (tokens, nanos, 1)[axis]
        return make_breach(
            window,
            axis,
            self._sums[i][axis],
            requested,
            self._wait_ns(tokens, nanos, now),
        )

    def _wait_ns(self, tokens: int, nanos: int, now: int) -> int:
        """Return ns until the request fits every window, or -1 for never."""
        amounts = (tokens, nanos, 1)
        until = now
        for i, caps in enumerate(self._caps):
            # An uncapped axis counts as capped at the int64 limit, as in C.
            limits = [_INT64_MAX if cap is None else cap for cap in caps]
            if any(
                amounts[axis] > limits[axis] for axis in (_TOKENS, _NANOS, _REQUESTS)
            ):
                return -1
            sums = self._sums[i]
            excess = [
                sums[axis] + amounts[axis] - limits[axis]
                for axis in (_TOKENS, _NANOS, _REQUESTS)
            ]
            if max(excess) <= 0:
                continue
            for seq in range(self._heads[i], self._next):
                record = self._records[seq - self._base]
                if record[1] != _RELEASED:
                    excess[_TOKENS] -= record[1]
                    excess[_NANOS] -= record[2]
                    excess[_REQUESTS] -= 1
                    if max(excess) <= 0:
                        until = max(until, record[0] + self._durations[i])
                        break
        return until - now

    def _commit(self, tokens: int, nanos: int, now: int) -> int:
        """Append a record and add it to every window; return its sequence."""
        self._records.append([now, tokens, nanos])
        for sums in self._sums:
            sums[_TOKENS] += tokens
            sums[_NANOS] += nanos
            sums[_REQUESTS] += 1
        seq = self._next
        self._next = seq + 1
        return seq

    def _now(self, now: object) -> int:
        return resolve_now(self._clock, now)

    # -- the public operations ----------------------------------------------

    def try_record(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> Breach | None:
        """Record a call if it fits every window; else return the first Breach.

        ``tokens`` is an int, ``usd`` dollars, ``now`` seconds (for tests and
        replays; by default the clock is read). Nothing is committed when a
        Breach is returned or an exception is raised.
        """
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        at = self._now(now)
        with self._lock:
            at = self._advance(at)
            problem = self._find_problem(tokens, nanos)
            if problem is not None:
                return self._problem_result(problem, tokens, nanos, at)
            self._commit(tokens, nanos, at)
            return None

    def record(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> None:
        """Record a call in every window, or raise WindowBreached and record nothing."""
        breach = self.try_record(tokens, usd, now=now)
        if breach is not None:
            raise WindowBreached(breach)

    def check(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> Breach | None:
        """Return the Breach a call would cause, or None if it fits; commit nothing."""
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        at = self._now(now)
        with self._lock:
            at = self._advance(at)
            problem = self._find_problem(tokens, nanos)
            if problem is None:
                return None
            return self._problem_result(problem, tokens, nanos, at)

    def retry_after(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> float:
        """Return seconds until a call would fit: 0.0 if now, ``inf`` if never.

        Assumes nothing else is recorded meanwhile. Commits nothing.
        """
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        at = self._now(now)
        with self._lock:
            at = self._advance(at)
            wait = self._wait_ns(tokens, nanos, at)
        return math.inf if wait < 0 else wait_to_seconds(wait)

    def snapshot(self, *, now: Number | None = None) -> list[WindowSnapshot]:
        """Return each window's use, in declaration order."""
        at = self._now(now)
        with self._lock:
            self._advance(at)
            sums = [tuple(s) for s in self._sums]
        return [make_snapshot(w, *s) for w, s in zip(self._windows, sums, strict=True)]

    def reset(self) -> None:
        """Forget every record and the latest time seen, in every window."""
        with self._lock:
            self._records = []
            self._base = self._next
            self._heads = [self._next] * len(self._windows)
            self._sums = [[0, 0, 0] for _ in self._windows]
            self._latest = None
        self._queue.poke()

    # -- reservations -------------------------------------------------------

    def reserve(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> Reservation:
        """Count an estimated call now; settle or release it later.

        Admitted exactly like ``record``: raises WindowBreached and commits
        nothing if the estimate does not fit.
        """
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        at = self._now(now)
        with self._lock:
            at = self._advance(at)
            problem = self._find_problem(tokens, nanos)
            if problem is None:
                seq = self._commit(tokens, nanos, at)
                return Reservation(self, seq, tokens, nanos)
            breach = self._problem_result(problem, tokens, nanos, at)
        raise WindowBreached(breach)

    def _holding(self, seq: int) -> list[list[int]]:
        """Return the sums of the windows that still hold record ``seq``."""
        return [
            sums
            for head, sums in zip(self._heads, self._sums, strict=True)
            if head <= seq
        ]

    def _settle(self, seq: int, tokens: int, nanos: int) -> None:
        with self._lock:
            holding = self._holding(seq)
            if holding:
                record = self._records[seq - self._base]
                delta_tokens = tokens - record[1]
                delta_nanos = nanos - record[2]
                for i, sums in enumerate(self._sums):
                    if self._heads[i] > seq:
                        continue
                    if sums[_TOKENS] + delta_tokens > _INT64_MAX:
                        raise overflow_error(self._windows[i], _TOKENS)
                    if sums[_NANOS] + delta_nanos > _INT64_MAX:
                        raise overflow_error(self._windows[i], _NANOS)
                for sums in holding:
                    sums[_TOKENS] += delta_tokens
                    sums[_NANOS] += delta_nanos
                record[1] = tokens
                record[2] = nanos
        self._queue.poke()

    def _release(self, seq: int) -> None:
        with self._lock:
            holding = self._holding(seq)
            if holding:
                record = self._records[seq - self._base]
                for sums in holding:
                    sums[_TOKENS] -= record[1]
                    sums[_NANOS] -= record[2]
                    sums[_REQUESTS] -= 1
                record[1] = _RELEASED
                record[2] = 0
        self._queue.poke()

    # -- waiting ------------------------------------------------------------

    def record_wait(
        self, tokens: int, usd: Number = 0, *, timeout: float | None = None
    ) -> None:
        """Block until the call fits, then record it.

        Waiters are served first in, first out. Raises WindowBreached at once
        if the call can never fit, and WaitTimeout (a TimeoutError) at once if
        the wait it needs is longer than what is left of ``timeout`` seconds.
        """
        record_wait(self, tokens, usd, timeout)

    def reserve_wait(
        self, tokens: int, usd: Number = 0, *, timeout: float | None = None
    ) -> Reservation:
        """Block until the estimate fits, then reserve it (see ``record_wait``)."""
        return reserve_wait(self, tokens, usd, timeout)

    async def arecord(
        self, tokens: int, usd: Number = 0, *, timeout: float | None = None
    ) -> None:
        """Wait without blocking the event loop, then record (see ``record_wait``)."""
        await arecord(self, tokens, usd, timeout)

    def areserve(
        self, tokens: int, usd: Number = 0, *, timeout: float | None = None
    ) -> AsyncReservation:
        """Wait without blocking the event loop, then reserve.

        Use as ``async with budget.areserve(...) as reservation:`` or
        ``reservation = await budget.areserve(...)``.
        """
        return AsyncReservation(self, tokens, usd, timeout)
