"""The Redis backend against a real server: the in-process answers, shared.

Behaviour tests run on the sync class and, through a small adapter, on the
asyncio class (ids ``sync`` and ``async``), with explicit ``now=`` seconds,
and compare with the pure-Python engine where a value is easier to trust
that way. The server comes from ``tests/redis_server.py``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import random
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
import redis.asyncio

from llm_budget_window import Axis, Breach, Window, WindowBreached
from llm_budget_window._budget_py import BudgetWindows as PyBudgetWindows
from llm_budget_window._types import usd_to_nanos
from llm_budget_window.redis import (
    AsyncRedisBudgetWindows,
    AsyncRedisReservation,
    BudgetBackendError,
    BudgetConfigMismatch,
    RedisBudgetWindows,
    read_records,
)

from .redis_server import (
    RedisServer,
    hammer,
    no_retry_client,
    unique_name,
)

pytestmark = pytest.mark.redis

NS = Decimal("1e-9")


class AsyncAsSync:
    """Drive an AsyncRedisBudgetWindows from sync code on a private event loop."""

    def __init__(self, url: str, name: str, windows: Any, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self.client = redis.asyncio.Redis.from_url(url)
        self.budget = AsyncRedisBudgetWindows(self.client, name, windows, **options)

    def __getattr__(self, attribute: str) -> Any:
        return _run_on(self._loop, getattr(self.budget, attribute))

    def close(self) -> None:
        self._loop.run_until_complete(self.client.aclose())
        self._loop.close()


class _SyncReservation:
    """An AsyncRedisReservation driven from sync code on its budget's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reservation: Any) -> None:
        self._loop = loop
        self._reservation = reservation

    def __getattr__(self, attribute: str) -> Any:
        return _run_on(self._loop, getattr(self._reservation, attribute))


def _run_on(loop: asyncio.AbstractEventLoop, value: Any) -> Any:
    """Return ``value``, or a sync function running it on ``loop`` if a coroutine."""
    if not asyncio.iscoroutinefunction(value):
        return value

    def call(*args: Any, **kwargs: Any) -> Any:
        result = loop.run_until_complete(value(*args, **kwargs))
        if isinstance(result, AsyncRedisReservation):
            return _SyncReservation(loop, result)
        return result

    return call


Factory = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def make_budget(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Factory]:
    """Build Redis budgets with fresh names, on the sync or the asyncio class."""
    opened: list[Any] = []

    def build(windows: Any, *, name: str | None = None, **options: Any) -> Any:
        name = name or unique_name()
        if request.param == "sync":
            client = redis.Redis.from_url(redis_url)
            opened.append(client)
            return RedisBudgetWindows(client, name, windows, **options)
        budget = AsyncAsSync(redis_url, name, windows, **options)
        opened.append(budget)
        return budget

    yield build
    for thing in opened:
        thing.close()


def used(budget: Any, now: object) -> list[tuple[int, float, int]]:
    return [
        (s.tokens_used, s.usd_used, s.requests_used) for s in budget.snapshot(now=now)
    ]


# -- time ------------------------------------------------------------------


def test_record_is_inside_its_window_one_nanosecond_before_the_duration(
    make_budget: Factory,
) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)])
    budget.record(100, now=0)
    assert budget.check(1, now=10 - NS) is not None


def test_record_ages_out_at_exactly_the_duration(make_budget: Factory) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)])
    budget.record(100, now=0)
    assert budget.check(100, now=10) is None
    assert used(budget, 10) == [(0, 0.0, 0)]


def test_each_window_ages_records_out_on_its_own_duration(
    make_budget: Factory,
) -> None:
    budget = make_budget([Window("s", 1), Window("m", 60), Window("h", 3_600)])
    budget.record(5, usd="0.5", now=0)
    assert used(budget, 1) == [(0, 0.0, 0), (5, 0.5, 1), (5, 0.5, 1)]
    assert used(budget, 60) == [(0, 0.0, 0), (0, 0.0, 0), (5, 0.5, 1)]
    assert used(budget, 3_600) == [(0, 0.0, 0)] * 3


def test_default_time_is_the_servers_clock(
    make_budget: Factory, redis_client: redis.Redis
) -> None:
    budget = make_budget([Window("w", 60)])
    before_s, before_us = redis_client.time()
    budget.record(1)
    after_s, after_us = redis_client.time()
    [(at, _, _)] = read_records(redis_client, budget.key)
    assert before_s * 10**9 + before_us * 1_000 <= at
    assert at <= after_s * 10**9 + after_us * 1_000


def test_now_earlier_than_the_latest_is_taken_as_the_latest(
    make_budget: Factory,
) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)])
    budget.record(60, now=100)
    budget.record(40, now=50)  # counted at 100, so it leaves at 110
    assert used(budget, 109) == [(100, 0.0, 2)]
    assert used(budget, 110) == [(0, 0.0, 0)]


def test_check_and_snapshot_move_the_latest_time_too(make_budget: Factory) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)])
    budget.check(1, now=100)
    budget.record(100, now=0)  # counted at 100
    assert budget.check(1, now=109) is not None
    assert budget.check(1, now=110) is None


def test_reset_forgets_records_and_the_latest_time(make_budget: Factory) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)])
    budget.record(100, now=100)
    budget.reset()
    assert used(budget, 0) == [(0, 0.0, 0)]
    budget.record(100, now=0)  # not clamped to 100 any more
    assert budget.check(1, now=10) is None


def test_negative_and_huge_times_are_exact(make_budget: Factory) -> None:
    budget = make_budget([Window("w", Decimal(2**61) * NS, request_cap=1)])
    start = Decimal(-(2**61) + 3) * NS
    budget.record(0, now=start)
    assert budget.retry_after(0, now=start) == (2**61) / 1e9
    assert budget.check(0, now=start + Decimal(2**61 - 1) * NS) is not None
    assert budget.check(0, now=start + Decimal(2**61) * NS) is None


# -- admission -----------------------------------------------------------------


def test_reaching_a_cap_exactly_is_allowed(make_budget: Factory) -> None:
    budget = make_budget([Window("w", 60, token_cap=100, usd_cap=1, request_cap=2)])
    budget.record(60, usd="0.4", now=0)
    assert budget.try_record(40, usd="0.6", now=1) is None
    assert used(budget, 1) == [(100, 1.0, 2)]


def test_refusal_by_a_later_window_commits_nothing_to_an_earlier_one(
    make_budget: Factory,
) -> None:
    budget = make_budget(
        [Window("a", 60, token_cap=1_000), Window("b", 3_600, token_cap=50)]
    )
    breach = budget.try_record(60, usd=1, now=0)
    assert breach is not None
    assert breach.window_name == "b"
    assert used(budget, 0) == [(0, 0.0, 0), (0, 0.0, 0)]


def test_breach_names_the_first_declared_window_that_does_not_fit(
    make_budget: Factory,
) -> None:
    windows = [Window("a", 60, token_cap=10), Window("b", 60, token_cap=5)]
    assert make_budget(windows).check(20, now=0).window_name == "a"
    assert make_budget(windows[::-1]).check(20, now=0).window_name == "b"


@pytest.mark.parametrize(
    ("tokens", "usd", "calls_before", "axis"),
    [
        (11, 2, 5, Axis.TOKENS),
        (10, 2, 5, Axis.USD),
        (10, 1, 5, Axis.REQUESTS),
    ],
)
def test_breach_reports_axes_in_the_order_tokens_usd_requests(
    make_budget: Factory, tokens: int, usd: int, calls_before: int, axis: Axis
) -> None:
    budget = make_budget([Window("w", 60, token_cap=10, usd_cap=1, request_cap=5)])
    for _ in range(calls_before):
        budget.record(0, now=0)
    assert budget.check(tokens, usd, now=0).axis is axis


def test_token_breach_carries_every_field(make_budget: Factory) -> None:
    budget = make_budget([Window("w", 60, token_cap=100)])
    budget.record(30, now=0)
    budget.record(50, now=20)
    with pytest.raises(WindowBreached) as raised:
        budget.record(40, now=30)
    assert raised.value.breach == Breach("w", Axis.TOKENS, 120, 100, 80, 40, 30.0)
    assert str(raised.value) == (
        "window 'w' would exceed its tokens cap: attempted 120 > cap 100 "
        "(used 80 + requested 40); retry after 30.0 s"
    )


def test_usd_breach_reads_float_dollars(make_budget: Factory) -> None:
    budget = make_budget([Window("w", 60, usd_cap="0.3")])
    budget.record(0, usd=0.1, now=0)
    budget.record(0, usd=0.2, now=1)
    breach = budget.try_record(0, usd="0.000000001", now=2)
    assert breach == Breach("w", Axis.USD, 0.300000001, 0.3, 0.3, 1e-9, 58.0)


def test_retry_after_is_zero_when_the_call_fits(make_budget: Factory) -> None:
    budget = make_budget([Window("w", 60, token_cap=100)])
    budget.record(50, now=0)
    assert budget.retry_after(50, now=1) == 0.0


def test_retry_after_waits_for_the_latest_window_to_make_room(
    make_budget: Factory,
) -> None:
    budget = make_budget(
        [Window("m", 60, token_cap=100), Window("h", 3_600, request_cap=3)]
    )
    for at in (0, 10, 20):
        budget.record(30, now=at)
    assert budget.retry_after(50, now=30) == 3_600 - 30
    assert budget.try_record(50, now=30).retry_after == 3_600 - 30


def test_retry_after_is_infinite_when_the_call_alone_exceeds_a_cap(
    make_budget: Factory,
) -> None:
    budget = make_budget([Window("w", 60, token_cap=100, request_cap=0)])
    assert budget.retry_after(101, now=0) == math.inf
    assert budget.try_record(0, now=0).retry_after == math.inf


def test_check_commits_nothing(make_budget: Factory) -> None:
    budget = make_budget([Window("w", 60, token_cap=100)])
    for _ in range(3):
        assert budget.check(100, usd=1, now=0) is None
    assert used(budget, 0) == [(0, 0.0, 0)]


def test_window_without_caps_counts_calls_tokens_and_usd(
    make_budget: Factory,
) -> None:
    budget = make_budget([Window("counter", 60)])
    for _ in range(3):
        budget.record(7, usd="0.25", now=0)
    [snap] = budget.snapshot(now=0)
    assert (snap.tokens_used, snap.usd_used, snap.requests_used) == (21, 0.75, 3)
    assert (snap.token_cap, snap.usd_cap, snap.request_cap) == (None, None, None)
    assert snap.tokens_remaining is None


def test_uncapped_sum_past_int64_raises_overflow_and_commits_nothing(
    make_budget: Factory,
) -> None:
    budget = make_budget([Window("w", 60)])
    budget.record(2**62 - 1, now=0)
    budget.record(2**62 - 1, now=0)
    with pytest.raises(OverflowError, match="window 'w'"):
        budget.record(2, now=0)
    assert used(budget, 0) == [(2**63 - 2, 0.0, 2)]


# -- money ------------------------------------------------------------------


def test_ten_and_twenty_cents_fit_a_thirty_cent_cap(make_budget: Factory) -> None:
    budget = make_budget([Window("w", 60, usd_cap=0.3)])
    assert budget.try_record(0, usd=0.1, now=0) is None
    assert budget.try_record(0, usd=0.2, now=0) is None
    [snap] = budget.snapshot(now=0)
    assert (snap.usd_used, snap.usd_remaining) == (0.3, 0.0)


def test_every_window_reads_exactly_zero_after_thousands_of_float_costs_age_out(
    make_budget: Factory,
) -> None:
    budget = make_budget([Window("m", 60), Window("h", 3_600, usd_cap=10**6)])
    rng = random.Random(5)
    for i in range(3_000):
        budget.record(rng.randint(0, 5_000), usd=rng.uniform(0, 0.05), now=i)
    assert used(budget, 3_000 + 3_600) == [(0, 0.0, 0), (0, 0.0, 0)]


# -- bad input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "usd", "now", "error", "message"),
    [
        (True, 0, 0, TypeError, "tokens must be an int, not bool: True"),
        (-1, 0, 0, ValueError, "tokens must be >= 0, got -1"),
        (1, math.nan, 0, ValueError, "usd must be finite, got nan"),
        (1, -0.5, 0, ValueError, "usd must be >= 0, got -0.5"),
        (1, 0, "soon", ValueError, "now must be a number, got 'soon'"),
    ],
)
def test_bad_input_raises_naming_the_argument_and_commits_nothing(
    make_budget: Factory,
    tokens: object,
    usd: object,
    now: object,
    error: type[Exception],
    message: str,
) -> None:
    budget = make_budget([Window("w", 60)])
    with pytest.raises(error) as raised:
        budget.try_record(tokens, usd, now=now)
    assert str(raised.value) == message
    assert used(budget, 0) == [(0, 0.0, 0)]


def test_name_with_braces_is_refused(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match=r"name must be .* got 'a\{b'"):
        RedisBudgetWindows(redis_client, "a{b", [Window("w", 1)])


def test_other_durations_under_the_same_name_are_refused(
    make_budget: Factory,
) -> None:
    name = unique_name()
    make_budget([Window("w", 60)], name=name).record(1, now=0)
    other = make_budget([Window("w", 61)], name=name)
    with pytest.raises(BudgetConfigMismatch, match=r"\[60000000000\] ns"):
        other.record(1, now=0)


def test_budget_stored_by_an_older_version_is_refused_until_reset(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(redis_client, unique_name(), [Window("w", 60)])
    # The layout before this one: 12 + 11 doubles and an untagged config.
    redis_client.hset(
        budget.key, mapping={"s": struct.pack("<23d", *range(23)), "c": "60000000000"}
    )
    with pytest.raises(BudgetConfigMismatch, match="layout of an older version"):
        budget.record(1, now=0)
    budget.reset()
    budget.record(1, now=0)
    assert used(budget, 0) == [(1, 0.0, 1)]


def test_clients_with_other_caps_share_the_sums(make_budget: Factory) -> None:
    name = unique_name()
    loose = make_budget([Window("w", 60, token_cap=100)], name=name)
    strict = make_budget([Window("w", 60, token_cap=10)], name=name)
    loose.record(8, now=0)
    assert strict.check(3, now=0).used == 8
    assert loose.check(3, now=0) is None


# -- the same answers as the pure-Python engine --------------------------------


def random_windows(rng: random.Random) -> list[Window]:
    count = rng.randint(1, 4)
    windows = []
    for i in range(count):
        caps: dict[str, Any] = {}
        if rng.random() < 0.7:
            caps["token_cap"] = rng.choice([0, 50, 1_000, 2**62, 2**63 - 1])
        if rng.random() < 0.6:
            caps["usd_cap"] = rng.choice(["0", "0.3", "5", "4000000000"])
        if rng.random() < 0.4:
            caps["request_cap"] = rng.choice([0, 1, 3, 20])
        duration = Decimal(rng.choice([1, 7, 10**9, 60 * 10**9, 2**61])) * NS
        windows.append(Window(f"w{i}", duration, **caps))
    return windows


def random_operation(rng: random.Random, clock: list[Decimal]) -> tuple[Any, ...]:
    # A rare jump of 2**60 ns ages out even the longest window; the clock
    # stays below 2**61 ns, inside what ``now`` accepts.
    jump = rng.choice([0, 0, 1, 3, 10**9, 30 * 10**9, 2**60])
    if clock[0] + Decimal(jump) * NS < Decimal(2**61) * NS:
        clock[0] += Decimal(jump) * NS
    now = clock[0] - (Decimal(rng.randint(0, 5)) * NS if rng.random() < 0.1 else 0)
    tokens = rng.choice([0, 1, 10, 400, 2**61, 2**62 - 1])
    usd = rng.choice([0, 0.1, 0.2, "0.000000001", rng.uniform(0, 2), "4000000000"])
    kind = rng.choices(
        ["try_record", "check", "retry_after", "snapshot", "reset"],
        weights=[10, 3, 3, 2, 0.2],
    )[0]
    return kind, tokens, usd, now


def run(budget: Any, operation: tuple[Any, ...]) -> object:
    kind, tokens, usd, now = operation
    try:
        if kind == "snapshot":
            return budget.snapshot(now=now)
        if kind == "reset":
            return budget.reset()
        return getattr(budget, kind)(tokens, usd, now=now)
    except OverflowError as error:
        return ("OverflowError", str(error))


@pytest.mark.parametrize("seed", range(12))
def test_random_operations_give_the_pure_python_engines_answers(
    make_budget: Factory, seed: int
) -> None:
    rng = random.Random(seed)
    windows = random_windows(rng)
    remote = make_budget(windows)
    local = PyBudgetWindows(windows)
    clock = [Decimal(rng.randint(-(10**12), 10**12)) * NS]
    for step in range(300):
        operation = random_operation(rng, clock)
        assert run(remote, operation) == run(local, operation), (step, operation)


# -- the stored records ----------------------------------------------------


def test_key_is_tagged_by_the_name_and_outlives_the_longest_window_by_a_quarter(
    redis_client: redis.Redis,
) -> None:
    name = unique_name()
    budget = RedisBudgetWindows(
        redis_client, name, [Window("s", 1), Window("m", 90), Window("x", 2)]
    )
    budget.record(1, now=0)
    assert budget.key == f"llm-budget-window:{{{name}}}"
    assert redis_client.keys(f"*{name}*") == [budget.key.encode()]
    assert 90_000 < redis_client.pttl(budget.key) <= 112_500


def test_calls_on_the_server_clock_push_the_expiry_out_once_per_quarter_window(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(redis_client, unique_name(), [Window("w", 60)])
    before = _command_counts(redis_client)["pexpire"]
    for _ in range(50):
        budget.record(1)
    assert _command_counts(redis_client)["pexpire"] - before == 1
    assert 60_000 < redis_client.pttl(budget.key) <= 75_000


def test_calls_passing_now_push_the_expiry_out_every_time(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(redis_client, unique_name(), [Window("w", 60)])
    before = _command_counts(redis_client)["pexpire"]
    for at in range(5):
        budget.record(1, now=at)
    assert _command_counts(redis_client)["pexpire"] - before == 5


def test_a_call_sent_twice_is_committed_once(redis_client: redis.Redis) -> None:
    budget = RedisBudgetWindows(redis_client, unique_name(), [Window("w", 60)])
    args = budget._args(5, 0, 0, call_id="same-call")
    for _ in range(2):
        assert budget._run(budget._try_record, args) == [0]
    assert [s.requests_used for s in budget.snapshot(now=0)] == [1]


def test_a_record_is_one_entry_whatever_its_token_count(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(redis_client, unique_name(), [Window("w", 60)])
    budget.record(1_000_000, usd=3, now=0)
    # The state, the config, one record and its call id.
    assert redis_client.hlen(budget.key) == 4
    assert read_records(redis_client, budget.key) == [(0, 1_000_000, 3 * 10**9)]


def test_records_are_deleted_once_they_leave_the_longest_window(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(
        redis_client, unique_name(), [Window("s", 1), Window("l", 10)]
    )
    for at in range(20):
        budget.record(1, now=at)
    assert [at for at, _, _ in read_records(redis_client, budget.key)] == [
        at * 10**9 for at in range(10, 20)
    ]
    assert redis_client.hlen(budget.key) == 2 + 2 * 10


# -- many processes and threads ----------------------------------------------


@pytest.mark.slow
def test_four_processes_of_eight_threads_never_overspend_and_are_told_the_truth(
    redis_url: str, redis_client: redis.Redis
) -> None:
    burst_cap, token_cap, usd_cap = 20, 60_000, "0.08"
    windows = [
        Window("burst", Decimal("0.05"), request_cap=burst_cap),
        Window("hour", 3_600, token_cap=token_cap, usd_cap=usd_cap),
    ]
    name = unique_name("hammer")
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.starmap(
            hammer, [(redis_url, name, windows, 8, 120, seed) for seed in range(4)]
        )
    admitted = [call for result in results for call in result]
    budget = RedisBudgetWindows(redis_client, name, windows)
    hour = budget.snapshot()[1]
    records = read_records(redis_client, budget.key)

    told_tokens = sum(tokens for tokens, _ in admitted)
    told_nanos = sum(nanos for _, nanos in admitted)
    assert 0 < told_tokens <= token_cap
    assert told_nanos <= usd_to_nanos(usd_cap)
    assert (hour.tokens_used, hour.usd_used, hour.requests_used) == (
        told_tokens,
        told_nanos / 10**9,
        len(admitted),
    )
    assert Counter((tokens, nanos) for _, tokens, nanos in records) == Counter(admitted)
    # Some call was refused by each cap, or the test would prove nothing.
    assert len(admitted) < 4 * 8 * 120
    burst_ns = 50_000_000
    times = [at for at, _, _ in records]
    oldest = 0
    for newest, at in enumerate(times):
        while times[oldest] <= at - burst_ns:
            oldest += 1
        assert newest - oldest + 1 <= burst_cap


# -- faults ----------------------------------------------------------------------


def test_calls_fail_closed_while_the_server_is_down_and_work_after_it_returns(
    private_redis_server: RedisServer,
) -> None:
    client = no_retry_client(private_redis_server.url)
    budget = RedisBudgetWindows(client, unique_name(), [Window("w", 60)])
    budget.record(1, now=0)

    private_redis_server.kill()
    with pytest.raises(BudgetBackendError) as raised:
        budget.record(1, now=1)
    assert isinstance(raised.value.__cause__, redis.ConnectionError)
    with pytest.raises(BudgetBackendError):
        budget.snapshot(now=1)

    private_redis_server.start()
    budget.record(1, now=2)
    assert [s.requests_used for s in budget.snapshot(now=2)] == [1]
    client.close()


def test_calls_are_admitted_with_a_warning_when_failing_open(
    private_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = no_retry_client(private_redis_server.url)
    budget = RedisBudgetWindows(
        client, unique_name(), [Window("w", 60, token_cap=1)], fail_open=True
    )
    private_redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="llm_budget_window.redis"):
        assert budget.try_record(1, now=0) is None
        assert budget.check(1, now=0) is None
        assert budget.retry_after(1, now=0) == 0.0
    assert len(caplog.records) == 3
    assert "admitting the call (fail_open=True)" in caplog.records[0].getMessage()
    with pytest.raises(BudgetBackendError):
        budget.snapshot(now=0)
    private_redis_server.start()
    budget.record(1, now=1)
    assert budget.try_record(1, now=1) is not None
    client.close()


def test_error_reply_raises_the_backend_error_with_its_cause(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(redis_client, unique_name(), [Window("w", 60)])
    redis_client.set(budget.key, "not a hash")
    with pytest.raises(BudgetBackendError, match="WRONGTYPE") as raised:
        budget.record(1, now=0)
    assert isinstance(raised.value.__cause__, redis.ResponseError)


def test_script_flush_in_the_middle_of_a_run_is_invisible(
    make_budget: Factory, redis_client: redis.Redis
) -> None:
    windows = [Window("w", 10, token_cap=100, request_cap=30)]
    remote = make_budget(windows)
    local = PyBudgetWindows(windows)
    for at in range(60):
        if at == 30:
            redis_client.script_flush()
            noscript_after_flush = _noscript_errors(redis_client)
        assert remote.try_record(at % 7, usd=0.01, now=at) == local.try_record(
            at % 7, usd=0.01, now=at
        )
    assert remote.snapshot(now=60) == local.snapshot(now=60)
    # One NOSCRIPT each, answered by reloading: try_record's script (flushed)
    # and snapshot's (never loaded before). The callers saw none of them.
    assert _noscript_errors(redis_client) == noscript_after_flush + 2


def _noscript_errors(client: redis.Redis) -> int:
    stats = client.info("errorstats")
    return int(stats.get("errorstat_NOSCRIPT", {}).get("count", 0))


# -- cost per call does not grow with the records held -------------------------

_SCRIPT_COMMANDS = ("hget", "hmget", "hset", "hdel", "hexists", "pexpire", "time")


def _command_counts(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter(
        {
            name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
            for name in (*_SCRIPT_COMMANDS, "evalsha", "eval")
        }
    )


def _preload(budget: RedisBudgetWindows, count: int) -> None:
    """Record ``count`` calls 10 ms apart from t = 0, pipelined."""
    client = budget.client
    script = budget._try_record
    script.sha = client.script_load(script.script)
    with client.pipeline(transaction=False) as pipe:
        for i in range(count):
            args = budget._args(3, 1_000, Decimal(i) / 100, budget._new_call_id())
            pipe.evalsha(script.sha, 1, budget.key, *args)
            if i % 2_000 == 1_999:
                pipe.execute()
        pipe.execute()


@pytest.mark.slow
def test_a_call_does_the_same_server_work_with_100000_records_held_as_with_100(
    redis_client: redis.Redis,
) -> None:
    windows = [Window("second", 1, token_cap=10**6), Window("long", 10**6)]
    work = {}
    for held in (100, 100_000):
        budget = RedisBudgetWindows(redis_client, unique_name(), windows)
        _preload(budget, held)
        assert budget.snapshot(now=Decimal(held - 1) / 100)[1].requests_used == held
        before = _command_counts(redis_client)
        for i in range(held, held + 200):
            budget.record(3, usd="0.000001", now=Decimal(i) / 100)
        work[held] = _command_counts(redis_client) - before
    assert work[100]["evalsha"] == 200
    assert work[100]["eval"] == 0
    assert work[100_000] == work[100]


# -- asyncio -------------------------------------------------------------------


def test_concurrent_tasks_take_exactly_the_cap(redis_url: str) -> None:
    async def main() -> tuple[int, int]:
        # More tasks than connections: they queue for a connection instead
        # of failing (redis-py's default pool raises past its limit).
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            redis_url, max_connections=20
        )
        client = redis.asyncio.Redis.from_pool(pool)
        budget = AsyncRedisBudgetWindows(
            client, unique_name(), [Window("w", 60, token_cap=1_000)]
        )
        results = await asyncio.gather(
            *(budget.try_record(7, now=0) for _ in range(300))
        )
        [snap] = await budget.snapshot(now=0)
        await client.aclose()
        return sum(result is None for result in results), snap.tokens_used

    admitted, tokens_used = asyncio.run(main())
    assert (admitted, tokens_used) == (1_000 // 7, 1_000 // 7 * 7)


def test_async_record_raises_window_breached(redis_url: str) -> None:
    async def main() -> Breach:
        client = redis.asyncio.Redis.from_url(redis_url)
        budget = AsyncRedisBudgetWindows(
            client, unique_name(), [Window("w", 60, request_cap=1)]
        )
        await budget.record(1, now=0)
        try:
            with pytest.raises(WindowBreached) as raised:
                await budget.record(1, now=1)
        finally:
            await client.aclose()
        return raised.value.breach

    assert asyncio.run(main()) == Breach("w", Axis.REQUESTS, 2, 1, 1, 1, 59.0)


def test_async_calls_fail_closed_when_the_server_is_unreachable() -> None:
    from .redis_server import free_port

    async def main() -> BaseException | None:
        client = redis.asyncio.Redis(
            port=free_port(), retry=None, socket_connect_timeout=1
        )
        budget = AsyncRedisBudgetWindows(client, unique_name(), [Window("w", 60)])
        try:
            await budget.record(1, now=0)
        except BudgetBackendError as error:
            return error.__cause__
        finally:
            await client.aclose()
        return None

    assert isinstance(asyncio.run(main()), redis.ConnectionError)


def test_stored_record_packs_time_and_prefix_sums(redis_client: redis.Redis) -> None:
    budget = RedisBudgetWindows(redis_client, unique_name(), [Window("w", 60)])
    budget.record(7, usd="1.5", now=Decimal("2.000000003"))
    raw = redis_client.hget(budget.key, "0")
    assert raw is not None
    assert struct.unpack("<6d", raw[:48]) == (2, 3, 0, 7, 1, 500_000_000)
