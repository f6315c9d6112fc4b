"""pytest-benchmark timings of every hot operation, on both engines.

    python -m pytest benchmarks/ --benchmark-only

Each round is ``CALLS`` calls of one operation in a tight loop, so the time
of a round in microseconds reads as nanoseconds per call. Rounds that record
without evicting start from a new budget (untimed), so the ring never grows
past one round's records. ``compare.py`` runs the same workload against the
floor and the peer libraries in one process; this suite is for tracking one
engine's operations over time (``--benchmark-autosave``,
``--benchmark-compare``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import workload

#: Calls in one timed round.
CALLS = 1000

#: The amount every call asks for: 1000 tokens at $3 per million tokens.
TOKENS = 1000
USD = TOKENS * workload.USD_PER_TOKEN

#: Rounds of the benchmarks that need a new budget before each round.
FRESH_ROUNDS = 200


def calls_of(method: Callable[..., Any], *args: Any) -> Callable[[], None]:
    """Return a function that makes ``CALLS`` calls of ``method(*args)``."""
    rounds = range(CALLS)

    def run() -> None:
        for _ in rounds:
            method(*args)

    return run


def bench_fresh_record(benchmark: Any, engine: type[Any], count: int) -> None:
    """Time ``record`` on a new budget of ``count`` windows in every round."""
    budgets: list[Any] = []

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        budgets[:] = [engine(workload.windows(count))]
        return (), {}

    def run() -> None:
        record = budgets[0].record
        for _ in range(CALLS):
            record(TOKENS, USD)

    benchmark.group = f"record, {count} window{'s' if count > 1 else ''}"
    benchmark.extra_info["calls_per_round"] = CALLS
    benchmark.pedantic(run, setup=setup, rounds=FRESH_ROUNDS, warmup_rounds=5)
    assert budgets[0].snapshot()[0].requests_used == CALLS


def test_record_1_window(benchmark: Any, engine: type[Any]) -> None:
    bench_fresh_record(benchmark, engine, 1)


def test_record_3_windows(benchmark: Any, engine: type[Any]) -> None:
    bench_fresh_record(benchmark, engine, 3)


def test_record_10_windows(benchmark: Any, engine: type[Any]) -> None:
    bench_fresh_record(benchmark, engine, 10)


def test_record_evicting_every_call(benchmark: Any, engine: type[Any]) -> None:
    """Windows of 0.05 s, 0.5 s and 5 s; the clock moves 50 us a call.

    After the warm-up the 5 s window holds about 100,000 records and every
    call evicts one record from every window.
    """
    clock = itertools.count(1000.0, workload.EVICTING_STEP).__next__
    budget = engine(workload.evicting_windows(), clock=clock)
    for _ in range(workload.EVICTING_PREFILL):
        budget.record(TOKENS, USD)

    benchmark.group = "record, evicting every call"
    benchmark.extra_info["calls_per_round"] = CALLS
    benchmark(calls_of(budget.record, TOKENS, USD))
    # Float times put a record on the 5 s boundary now and then.
    assert abs(budget.snapshot()[2].requests_used - 100_000) <= 1


def full_budget(engine: type[Any]) -> Any:
    """Return a budget whose minute window holds its whole token cap.

    100 records of 1000 tokens at t = 1000 s fill the 100,000-token cap;
    calls at t = 1030 s see every record still in the window.
    """
    windows = workload.windows(3)
    windows[0] = windows[0].with_token_cap(100 * TOKENS)
    budget = engine(windows)
    for _ in range(100):
        budget.record(TOKENS, USD, now=1000.0)
    return budget


def test_try_record_breach(benchmark: Any, engine: type[Any]) -> None:
    """``try_record`` rejecting: the minute window's token cap is reached."""
    budget = full_budget(engine)
    assert budget.try_record(TOKENS, USD, now=1030.0) is not None

    def run() -> None:
        try_record = budget.try_record
        for _ in range(CALLS):
            try_record(TOKENS, USD, now=1030.0)

    benchmark.group = "try_record, rejected"
    benchmark.extra_info["calls_per_round"] = CALLS
    benchmark(run)


def test_check_fits(benchmark: Any, engine: type[Any]) -> None:
    """``check`` of a call that fits, on 3 windows holding 1000 records."""
    budget = engine(workload.windows(3))
    for _ in range(CALLS):
        budget.record(TOKENS, USD)

    benchmark.group = "check"
    benchmark.extra_info["calls_per_round"] = CALLS
    benchmark(calls_of(budget.check, TOKENS, USD))


def test_retry_after_full(benchmark: Any, engine: type[Any]) -> None:
    """``retry_after`` on a full window: 30 s until the oldest record ages out."""
    budget = full_budget(engine)
    assert budget.retry_after(TOKENS, USD, now=1030.0) == 30.0

    def run() -> None:
        retry_after = budget.retry_after
        for _ in range(CALLS):
            retry_after(TOKENS, USD, now=1030.0)

    benchmark.group = "retry_after"
    benchmark.extra_info["calls_per_round"] = CALLS
    benchmark(run)


def test_snapshot_3_windows(benchmark: Any, engine: type[Any]) -> None:
    """``snapshot`` of 3 windows holding 1000 records."""
    budget = engine(workload.windows(3))
    for _ in range(CALLS):
        budget.record(TOKENS, USD)

    benchmark.group = "snapshot, 3 windows"
    benchmark.extra_info["calls_per_round"] = CALLS
    benchmark(calls_of(budget.snapshot))
