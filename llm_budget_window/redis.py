"""One budget shared by many processes and hosts, kept in Redis.

``RedisBudgetWindows`` (a redis-py ``Redis`` client) and
``AsyncRedisBudgetWindows`` (a ``redis.asyncio.Redis`` client) offer the
methods of ``BudgetWindows`` (``record``, ``try_record``, ``check``,
``retry_after``, ``snapshot``, ``reset``, ``reserve`` with settle and
release, and waiting) and give the same answers. Each call is one EVALSHA
of a Lua script, so the check and the commit are atomic across every window
and against every other client. Time comes from the server's ``TIME``
unless a call passes ``now=`` (seconds).

Needs the ``redis`` extra: ``pip install llm-budget-window[redis]``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio

from . import _redis_lua as lua
from ._reservation import RELEASED, SETTLED, Reservation, ReservationState
from ._types import (
    Breach,
    Number,
    Window,
    WindowBreached,
    WindowSnapshot,
    make_breach,
    make_snapshot,
    overflow_error,
    seconds_to_ns,
    to_tokens,
    usd_to_nanos,
    validate_windows,
    wait_to_seconds,
)
from ._waiting import WaitQueue, record_wait, reserve_wait, wait_for_room

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript, Script

__all__ = [
    "AsyncRedisBudgetWindows",
    "AsyncRedisReservation",
    "AwaitingRedisReservation",
    "BudgetBackendError",
    "BudgetConfigMismatch",
    "RedisBudgetWindows",
]

logger = logging.getLogger(__name__)

_INT64_MAX = (1 << 63) - 1
_PAIR_BASE = lua.PAIR_BASE
_MIN_TTL_MS = 60_000


class BudgetBackendError(RuntimeError):
    """Raised when Redis cannot be reached or answers with an error.

    The error from redis-py is the ``__cause__``. If it came after the request
    was sent (a timeout), the call may have been committed: the budget then
    counts a call the caller did not make, which errs on the side of spending
    less, never more.
    """


class BudgetConfigMismatch(ValueError):
    """Raised when a budget's name is already used in Redis with other windows.

    A budget's stored sums depend on its window durations and their order;
    two clients sharing a name must declare the same durations (caps may
    differ: each client enforces its own caps against the shared sums).
    Raised whatever ``fail_open`` says, because it is a configuration error.
    """


class _RedisBudgetBase:
    """What the sync and asyncio classes share: arguments in, answers out."""

    __slots__ = (
        "_windows",
        "_name",
        "_key",
        "_fail_open",
        "_budget_args",
        "_config",
        "_stored_config",
        "_id_prefix",
        "_id_counter",
        "_queue",
    )

    def __init__(
        self,
        name: str,
        windows: Iterable[Window],
        *,
        fail_open: bool,
        key_prefix: str,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}: {name!r}")
        if not name or "{" in name or "}" in name:
            raise ValueError(
                f"name must be a non-empty str without braces, got {name!r}"
            )
        if not isinstance(key_prefix, str):
            raise TypeError(
                f"key_prefix must be a str, not {type(key_prefix).__name__}: "
                f"{key_prefix!r}"
            )
        self._windows = validate_windows(windows)
        self._name = name
        # The braces make the name a hash tag: every key of this budget lands
        # in the same Redis Cluster slot.
        self._key = f"{key_prefix}:{{{name}}}"
        self._fail_open = bool(fail_open)

        durations = [w.duration_ns for w in self._windows]
        longest = durations.index(max(durations))
        self._config = ",".join(str(d) for d in durations)
        self._stored_config = lua.LAYOUT_TAG + self._config
        # Keys expire once the longest window has passed with no call, in
        # the server's real time. The floor of a minute keeps a budget whose
        # calls pass ``now=`` (a replay, a test) from expiring between two
        # calls of a short window. The expiry is set a quarter longer, so
        # that a call needs to push it out only once per quarter.
        ttl_ms = max(-(-durations[longest] // 1_000_000), _MIN_TTL_MS)
        self._budget_args = lua.pack_budget(
            ttl_ms + ttl_ms // 4,
            ttl_ms,
            longest,
            [
                tuple(
                    _INT64_MAX if value is None else value
                    for value in (
                        window.duration_ns,
                        window.token_cap,
                        window.usd_cap_nanos,
                        window.request_cap,
                    )
                )
                for window in self._windows
            ],
        )
        self._id_prefix = os.urandom(8).hex()
        self._id_counter = itertools.count()
        self._queue = WaitQueue()

    @property
    def windows(self) -> tuple[Window, ...]:
        """The windows, in declaration order."""
        return self._windows

    @property
    def name(self) -> str:
        """The budget's name, shared by every client of this budget."""
        return self._name

    @property
    def key(self) -> str:
        """The Redis key holding the whole budget."""
        return self._key

    @property
    def fail_open(self) -> bool:
        """Whether a call is admitted (with a warning) when Redis fails."""
        return self._fail_open

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._name!r}, {list(self._windows)!r}, "
            f"fail_open={self._fail_open!r})"
        )

    # -- encoding and decoding ------------------------------------------------

    def _args(
        self, tokens: int, nanos: int, now: Number | None, call_id: str = ""
    ) -> list[str | bytes]:
        now_ns = None if now is None else seconds_to_ns(now, "now")
        return [
            call_id,
            self._stored_config,
            lua.pack_call(now_ns, tokens, nanos, self._budget_args),
        ]

    def _new_call_id(self) -> str:
        return self._call_id(next(self._id_counter))

    def _call_id(self, number: int) -> str:
        """Return the id of this client's call ``number``, unique across clients."""
        return f"{self._id_prefix}{number:x}"

    def _corrected(self, reply: Sequence[int]) -> None:
        """Raise OverflowError if a settle was refused for passing 2**63 - 1."""
        if reply[0] != 0:
            raise overflow_error(self._windows[reply[1]], reply[2])

    def _decide(self, reply: Sequence[int], tokens: int, nanos: int) -> Breach | None:
        if reply[0] == 0:
            return None
        _, index, axis, used_high, used_low, never, wait_high, wait_low = reply
        window = self._windows[index]
        if (window.token_cap, window.usd_cap_nanos, window.request_cap)[axis] is None:
            raise overflow_error(window, axis)
        wait_ns = -1 if never else wait_high * _PAIR_BASE + wait_low
        requested = (tokens, nanos, 1)[axis]
        return make_breach(
            window, axis, used_high * _PAIR_BASE + used_low, requested, wait_ns
        )

    @staticmethod
    def _seconds(reply: Sequence[int]) -> float:
        never, wait_high, wait_low = reply
        if never:
            return math.inf
        return wait_to_seconds(wait_high * _PAIR_BASE + wait_low)

    def _snapshots(self, reply: Sequence[int]) -> list[WindowSnapshot]:
        result = []
        for i, window in enumerate(self._windows):
            tok_high, tok_low, nanos_high, nanos_low, requests = reply[
                5 * i : 5 * i + 5
            ]
            result.append(
                make_snapshot(
                    window,
                    tok_high * _PAIR_BASE + tok_low,
                    nanos_high * _PAIR_BASE + nanos_low,
                    requests,
                )
            )
        return result

    def _failure(self, error: redis.RedisError, operation: str) -> BudgetBackendError:
        """Return the error to raise for a failed round trip (or raise a mismatch)."""
        message = str(error)
        if isinstance(error, redis.ResponseError) and message.startswith("LBWCONFIG"):
            stored = message.split(" ", 1)[1] if " " in message else "?"
            if not stored.startswith(lua.LAYOUT_TAG):
                raise BudgetConfigMismatch(
                    f"budget {self._name!r} is stored in Redis in the layout of "
                    "an older version of llm-budget-window, which this version "
                    "cannot read; reset() it or use another name"
                ) from error
            stored = stored[len(lua.LAYOUT_TAG) :]
            raise BudgetConfigMismatch(
                f"budget {self._name!r} is stored in Redis with window durations "
                f"[{stored}] ns, but this client declares [{self._config}] ns; "
                "use another name, the same durations, or reset() it"
            ) from error
        return BudgetBackendError(
            f"budget {self._name!r}: {operation} failed in Redis: "
            f"{type(error).__name__}: {message}"
        )

    def _admit_on_failure(self, error: redis.RedisError, operation: str) -> None:
        """Raise for a failed round trip, or log and return if failing open."""
        failure = self._failure(error, operation)
        if not self._fail_open:
            raise failure from error
        logger.warning("%s; admitting the call (fail_open=True)", failure)

    def _skip_on_failure(self, error: redis.RedisError, operation: str) -> None:
        """Raise for a failed settle or release, or log and return if failing open."""
        failure = self._failure(error, operation)
        if not self._fail_open:
            raise failure from error
        logger.warning(
            "%s; the reservation keeps the amounts Redis holds (fail_open=True)",
            failure,
        )


class RedisBudgetWindows(_RedisBudgetBase):
    """A budget of several rolling windows, shared through Redis.

    ``client`` is a ``redis.Redis``; ``name`` identifies the budget (clients
    using the same name share it; it becomes the hash tag of the key
    ``"{key_prefix}:{{name}}"``); ``windows`` as for ``BudgetWindows``.
    Amounts and times are validated here, before any round trip, exactly as
    in-process. When Redis fails, ``BudgetBackendError`` is raised (fail
    closed; a reservation whose settle or release raised stays open, and
    retrying it is safe); with ``fail_open=True``, ``record``,
    ``try_record``, ``check`` and ``reserve`` admit the call uncounted,
    ``retry_after`` answers 0.0, a settle or release leaves Redis as it was,
    and a warning is logged (``snapshot`` and ``reset`` still raise). Safe
    to call from many threads, processes and hosts at once.
    """

    __slots__ = (
        "_client",
        "_try_record",
        "_check",
        "_retry_after",
        "_snapshot",
        "_settle_script",
        "_release_script",
    )

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        windows: Iterable[Window],
        *,
        fail_open: bool = False,
        key_prefix: str = "llm-budget-window",
    ) -> None:
        super().__init__(name, windows, fail_open=fail_open, key_prefix=key_prefix)
        self._client = client
        self._try_record: Script = client.register_script(lua.TRY_RECORD)
        self._check: Script = client.register_script(lua.CHECK)
        self._retry_after: Script = client.register_script(lua.RETRY_AFTER)
        self._snapshot: Script = client.register_script(lua.SNAPSHOT)
        self._settle_script: Script = client.register_script(lua.SETTLE)
        self._release_script: Script = client.register_script(lua.RELEASE)

    @property
    def client(self) -> redis.Redis:
        """The redis-py client this budget talks through."""
        return self._client

    def _run(self, script: Script, args: list[str | bytes]) -> Any:
        # redis-py's Script sends EVALSHA and, after a NOSCRIPT reply (the
        # script cache was flushed), loads the script and sends it again.
        return script(keys=[self._key], args=args)

    def try_record(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> Breach | None:
        """Record a call if it fits every window; else return the first Breach.

        ``tokens`` is an int, ``usd`` dollars, ``now`` seconds (default: the
        server's clock). Nothing is committed when a Breach is returned or an
        exception is raised. Raises BudgetBackendError when Redis fails
        (unless ``fail_open``), OverflowError when an uncapped sum would pass
        2**63 - 1.
        """
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        args = self._args(tokens, nanos, now, self._new_call_id())
        try:
            reply = self._run(self._try_record, args)
        except redis.RedisError as error:
            self._admit_on_failure(error, "try_record")
            return None
        return self._decide(reply, tokens, nanos)

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
        args = self._args(tokens, nanos, now)
        try:
            reply = self._run(self._check, args)
        except redis.RedisError as error:
            self._admit_on_failure(error, "check")
            return None
        return self._decide(reply, tokens, nanos)

    def retry_after(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> float:
        """Return seconds until a call would fit: 0.0 if now, ``inf`` if never.

        Assumes nothing else is recorded meanwhile. Commits nothing.
        """
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        args = self._args(tokens, nanos, now)
        try:
            reply = self._run(self._retry_after, args)
        except redis.RedisError as error:
            self._admit_on_failure(error, "retry_after")
            return 0.0
        return self._seconds(reply)

    def snapshot(self, *, now: Number | None = None) -> list[WindowSnapshot]:
        """Return each window's use, in declaration order.

        Raises BudgetBackendError when Redis fails, even with ``fail_open``.
        """
        args = self._args(0, 0, now)
        try:
            reply = self._run(self._snapshot, args)
        except redis.RedisError as error:
            raise self._failure(error, "snapshot") from error
        return self._snapshots(reply)

    def reset(self) -> None:
        """Forget every record and the latest time seen, for every client.

        Raises BudgetBackendError when Redis fails, even with ``fail_open``.
        """
        try:
            self._client.delete(self._key)
        except redis.RedisError as error:
            raise self._failure(error, "reset") from error
        self._queue.poke()

    # -- reservations -------------------------------------------------------

    def reserve(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> Reservation:
        """Count an estimated call now; settle or release it later.

        Admitted exactly like ``record``: raises WindowBreached and commits
        nothing if the estimate does not fit. The reservation finds its record
        by the id of this call, from any thread of this process. With
        ``fail_open``, a reservation made while Redis fails is admitted
        uncounted, and settling or releasing it changes nothing.
        """
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        number = next(self._id_counter)
        args = self._args(tokens, nanos, now, self._call_id(number))
        try:
            reply = self._run(self._try_record, args)
        except redis.RedisError as error:
            self._admit_on_failure(error, "reserve")
            return Reservation(self, number, tokens, nanos)
        breach = self._decide(reply, tokens, nanos)
        if breach is not None:
            raise WindowBreached(breach)
        return Reservation(self, number, tokens, nanos)

    def _settle(self, seq: int, tokens: int, nanos: int) -> None:
        args = self._args(tokens, nanos, None, self._call_id(seq))
        try:
            reply = self._run(self._settle_script, args)
        except redis.RedisError as error:
            self._skip_on_failure(error, "settle")
            return
        self._corrected(reply)
        self._queue.poke()

    def _release(self, seq: int) -> None:
        args = self._args(0, 0, None, self._call_id(seq))
        try:
            self._run(self._release_script, args)
        except redis.RedisError as error:
            self._skip_on_failure(error, "release")
            return
        self._queue.poke()

    # -- waiting ------------------------------------------------------------

    def record_wait(
        self, tokens: int, usd: Number = 0, *, timeout: float | None = None
    ) -> None:
        """Block until the call fits, then record it.

        Sleeps for the breach's ``retry_after`` (measured on the server's
        clock) and tries again. Waiters of this budget object are served
        first in, first out; other objects, processes and hosts are not in
        the queue. Raises WindowBreached at once if the call can never fit,
        and WaitTimeout (a TimeoutError) at once if the wait it needs is
        longer than what is left of ``timeout`` seconds.
        """
        record_wait(self, tokens, usd, timeout)

    def reserve_wait(
        self, tokens: int, usd: Number = 0, *, timeout: float | None = None
    ) -> Reservation:
        """Block until the estimate fits, then reserve it (see ``record_wait``)."""
        return reserve_wait(self, tokens, usd, timeout)


class AsyncRedisBudgetWindows(_RedisBudgetBase):
    """The asyncio form of ``RedisBudgetWindows``: the same methods, awaited.

    ``client`` is a ``redis.asyncio.Redis``. Everything else, answers and
    errors included, is as in ``RedisBudgetWindows``. ``reserve`` gives an
    ``AsyncRedisReservation``, whose ``settle`` and ``release`` are awaited;
    ``arecord`` and ``areserve`` (also named ``record_wait`` and
    ``reserve_wait``) wait without blocking the event loop.
    """

    __slots__ = (
        "_client",
        "_try_record",
        "_check",
        "_retry_after",
        "_snapshot",
        "_settle_script",
        "_release_script",
        "_cleanups",
    )

    def __init__(
        self,
        client: redis.asyncio.Redis,
        name: str,
        windows: Iterable[Window],
        *,
        fail_open: bool = False,
        key_prefix: str = "llm-budget-window",
    ) -> None:
        super().__init__(name, windows, fail_open=fail_open, key_prefix=key_prefix)
        self._client = client
        self._try_record: AsyncScript = client.register_script(lua.TRY_RECORD)
        self._check: AsyncScript = client.register_script(lua.CHECK)
        self._retry_after: AsyncScript = client.register_script(lua.RETRY_AFTER)
        self._snapshot: AsyncScript = client.register_script(lua.SNAPSHOT)
        self._settle_script: AsyncScript = client.register_script(lua.SETTLE)
        self._release_script: AsyncScript = client.register_script(lua.RELEASE)
        # Releases of reservations whose waiting task was cancelled in flight,
        # kept referenced until they finish.
        self._cleanups: set[asyncio.Task[None]] = set()

    @property
    def client(self) -> redis.asyncio.Redis:
        """The redis-py asyncio client this budget talks through."""
        return self._client

    async def _run(self, script: AsyncScript, args: list[str | bytes]) -> Any:
        return await script(keys=[self._key], args=args)

    async def try_record(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> Breach | None:
        """Record a call if it fits every window; else return the first Breach.

        See ``RedisBudgetWindows.try_record``.
        """
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        args = self._args(tokens, nanos, now, self._new_call_id())
        try:
            reply = await self._run(self._try_record, args)
        except redis.RedisError as error:
            self._admit_on_failure(error, "try_record")
            return None
        return self._decide(reply, tokens, nanos)

    async def record(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> None:
        """Record a call in every window, or raise WindowBreached and record nothing."""
        breach = await self.try_record(tokens, usd, now=now)
        if breach is not None:
            raise WindowBreached(breach)

    async def check(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> Breach | None:
        """Return the Breach a call would cause, or None if it fits; commit nothing."""
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        args = self._args(tokens, nanos, now)
        try:
            reply = await self._run(self._check, args)
        except redis.RedisError as error:
            self._admit_on_failure(error, "check")
            return None
        return self._decide(reply, tokens, nanos)

    async def retry_after(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> float:
        """Return seconds until a call would fit: 0.0 if now, ``inf`` if never."""
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        args = self._args(tokens, nanos, now)
        try:
            reply = await self._run(self._retry_after, args)
        except redis.RedisError as error:
            self._admit_on_failure(error, "retry_after")
            return 0.0
        return self._seconds(reply)

    async def snapshot(self, *, now: Number | None = None) -> list[WindowSnapshot]:
        """Return each window's use, in declaration order (raises on failure)."""
        args = self._args(0, 0, now)
        try:
            reply = await self._run(self._snapshot, args)
        except redis.RedisError as error:
            raise self._failure(error, "snapshot") from error
        return self._snapshots(reply)

    async def reset(self) -> None:
        """Forget every record and the latest time seen, for every client."""
        try:
            await self._client.delete(self._key)
        except redis.RedisError as error:
            raise self._failure(error, "reset") from error
        self._queue.poke()

    # -- reservations -------------------------------------------------------

    async def reserve(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> AsyncRedisReservation:
        """Count an estimated call now; settle or release it later.

        See ``RedisBudgetWindows.reserve``. Use the result with ``async
        with`` to release it if the block raises.
        """
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        number = next(self._id_counter)
        args = self._args(tokens, nanos, now, self._call_id(number))
        try:
            reply = await self._run(self._try_record, args)
        except redis.RedisError as error:
            self._admit_on_failure(error, "reserve")
            return AsyncRedisReservation(self, number, tokens, nanos)
        breach = self._decide(reply, tokens, nanos)
        if breach is not None:
            raise WindowBreached(breach)
        return AsyncRedisReservation(self, number, tokens, nanos)

    async def _settle(self, seq: int, tokens: int, nanos: int) -> None:
        args = self._args(tokens, nanos, None, self._call_id(seq))
        try:
            reply = await self._run(self._settle_script, args)
        except redis.RedisError as error:
            self._skip_on_failure(error, "settle")
            return
        self._corrected(reply)
        self._queue.poke()

    async def _release(self, seq: int) -> None:
        args = self._args(0, 0, None, self._call_id(seq))
        try:
            await self._run(self._release_script, args)
        except redis.RedisError as error:
            self._skip_on_failure(error, "release")
            return
        self._queue.poke()

    # -- waiting ------------------------------------------------------------

    async def arecord(
        self, tokens: int, usd: Number = 0, *, timeout: float | None = None
    ) -> None:
        """Wait without blocking the event loop until the call fits; record it.

        As ``RedisBudgetWindows.record_wait``, with the tasks waiting on this
        budget object in one first-in, first-out queue. A task cancelled
        while waiting has committed nothing: a call in flight when the
        cancellation came is released once Redis answers.
        """
        await self._wait(tokens, usd, timeout)

    def areserve(
        self, tokens: int, usd: Number = 0, *, timeout: float | None = None
    ) -> AwaitingRedisReservation:
        """Wait without blocking the event loop, then reserve.

        Use as ``async with budget.areserve(...) as reservation:`` or
        ``reservation = await budget.areserve(...)``.
        """
        return AwaitingRedisReservation(self, tokens, usd, timeout)

    async def record_wait(
        self, tokens: int, usd: Number = 0, *, timeout: float | None = None
    ) -> None:
        """The same as ``arecord``."""
        await self._wait(tokens, usd, timeout)

    async def reserve_wait(
        self, tokens: int, usd: Number = 0, *, timeout: float | None = None
    ) -> AsyncRedisReservation:
        """The same as ``await areserve(...)``."""
        return await self._wait(tokens, usd, timeout)

    async def _wait(
        self, tokens: int, usd: Number, timeout: object
    ) -> AsyncRedisReservation:
        def never_fits() -> None:
            # Only the amounts are checked here, with no round trip: the
            # waiter joins the queue first, in the order of the calls, and
            # its first attempt at the head tells whether it can ever fit.
            to_tokens(tokens)
            usd_to_nanos(usd)

        async def attempt() -> tuple[AsyncRedisReservation | None, Breach | None]:
            # The round trip runs in a task of its own, so that a cancellation
            # cannot cut it short: if it committed, the reservation is
            # released as soon as it is known.
            pending = asyncio.ensure_future(self._reserve_or_breach(tokens, usd))
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                pending.add_done_callback(self._release_abandoned)
                raise

        reservation = await wait_for_room(self._queue, never_fits, attempt, timeout)
        assert reservation is not None  # an attempt without a breach reserved
        return reservation

    async def _reserve_or_breach(
        self, tokens: int, usd: Number
    ) -> tuple[AsyncRedisReservation | None, Breach | None]:
        try:
            return await self.reserve(tokens, usd), None
        except WindowBreached as error:
            return None, error.breach

    def _release_abandoned(
        self,
        pending: asyncio.Future[tuple[AsyncRedisReservation | None, Breach | None]],
    ) -> None:
        if pending.cancelled() or pending.exception() is not None:
            return
        reservation, _ = pending.result()
        if reservation is not None:
            cleanup = asyncio.ensure_future(reservation.release())
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanup_done)

    def _cleanup_done(self, cleanup: asyncio.Task[None]) -> None:
        self._cleanups.discard(cleanup)
        if not cleanup.cancelled() and cleanup.exception() is not None:
            logger.warning(
                "budget %r: releasing the reservation of a cancelled waiter "
                "failed: %s; its estimate stays counted until it ages out",
                self._name,
                cleanup.exception(),
            )


class AsyncRedisReservation(ReservationState):
    """A reservation on an ``AsyncRedisBudgetWindows``: settle and release awaited.

    The same rules as ``Reservation``: settled or released once, from any
    task; ``async with`` releases it when the block raises and keeps the
    estimate (or what was settled) otherwise.
    """

    __slots__ = ()

    def __init__(
        self, budget: AsyncRedisBudgetWindows, seq: int, tokens: int, nanos: int
    ) -> None:
        super().__init__(budget, seq, tokens, nanos)

    async def settle(self, tokens: int, usd: Number = 0) -> None:
        """Replace the estimate by the actual usage, at the original timestamp.

        See ``Reservation.settle``.
        """
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        self._begin("settle")
        try:
            await self._budget._settle(self._seq, tokens, nanos)
        except BaseException:
            self._reopen()
            raise
        self._finish(SETTLED, tokens, nanos)

    async def release(self) -> None:
        """Remove the call from every window that still holds it."""
        self._begin("release")
        try:
            await self._budget._release(self._seq)
        except BaseException:
            self._reopen()
            raise
        self._finish(RELEASED, self._tokens, self._nanos)

    async def __aenter__(self) -> AsyncRedisReservation:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None and self.state == "open":
            await self.release()


class AwaitingRedisReservation:
    """What ``AsyncRedisBudgetWindows.areserve`` returns: await it, or ``async with``.

    ``async with budget.areserve(...) as reservation:`` waits for room and
    reserves; leaving the block normally keeps the estimate (or what was
    settled), an exception releases the reservation.
    """

    __slots__ = ("_budget", "_tokens", "_usd", "_timeout", "_reservation")

    def __init__(
        self,
        budget: AsyncRedisBudgetWindows,
        tokens: int,
        usd: Number,
        timeout: object,
    ) -> None:
        self._budget = budget
        self._tokens = tokens
        self._usd = usd
        self._timeout = timeout
        self._reservation: AsyncRedisReservation | None = None

    def __await__(self) -> Any:
        return self._budget._wait(self._tokens, self._usd, self._timeout).__await__()

    async def __aenter__(self) -> AsyncRedisReservation:
        self._reservation = await self
        return self._reservation

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._reservation is not None:
            await self._reservation.__aexit__(exc_type, exc, traceback)


def read_records(client: redis.Redis, key: str) -> list[tuple[int, int, int]]:
    """Return the records a budget still holds as (time ns, tokens, nano-dollars).

    Settled records read their actual amounts; released ones are left out.
    For inspection and tests: reads the whole budget (O(records held)).
    """
    import struct

    fields: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    state = fields.get(b"s")
    if state is None:
        return []
    globals_, per_window = 8, 7
    count = (len(state) // 8 - globals_) // per_window
    values = struct.unpack(f"<{globals_ + per_window * count}d", state)
    next_seq = int(values[2])
    heads = [int(values[globals_ + per_window * w]) for w in range(count)]
    start = min(heads)
    base = values[globals_ + per_window * heads.index(start) + 1 :][:4]
    modulus = 10**19

    def pair(high: float, low: float) -> int:
        return int(high) * _PAIR_BASE + int(low)

    previous = (pair(base[0], base[1]), pair(base[2], base[3]))
    records = []
    for seq in range(start, next_seq):
        _, _, tok_high, tok_low, n_high, n_low = struct.unpack(
            "<6d", fields[str(seq).encode()][:48]
        )
        at = struct.unpack("<2d", fields[str(seq).encode()][:16])
        cumulative = (pair(tok_high, tok_low), pair(n_high, n_low))
        tokens = (cumulative[0] - previous[0]) % modulus
        nanos = (cumulative[1] - previous[1]) % modulus
        previous = cumulative
        correction = fields.get(f"d{seq}".encode())
        if correction is not None:
            dt_high, dt_low, dn_high, dn_low, released = struct.unpack(
                "<5d", correction
            )
            if released:
                continue
            tokens = (tokens + pair(dt_high, dt_low)) % modulus
            nanos = (nanos + pair(dn_high, dn_low)) % modulus
        records.append((pair(*at), tokens, nanos))
    return records
