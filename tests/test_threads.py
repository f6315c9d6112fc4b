"""Many threads on one budget: caps hold and nothing admitted is lost.

Run on the compiled core as built (holding the GIL over the critical section),
on the compiled core releasing the GIL around it (under its C mutex), and on
the pure-Python twin. The clock is the real monotonic clock.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest

from llm_budget_window import Window, WindowBreached
from tests.conftest import load_engine

THREADS = 8
ATTEMPTS_PER_THREAD = 3_000
NANOS = 10**9

# Each attempt asks for 1..199 tokens (100 on average) and up to $0.02 ($0.01 on
# average), so the caps below hold about half of what the threads ask for.
TOKEN_CAP = THREADS * ATTEMPTS_PER_THREAD * 100 // 2
USD_CAP = THREADS * ATTEMPTS_PER_THREAD * Fraction(1, 100) / 2
REQUEST_CAP = THREADS * ATTEMPTS_PER_THREAD // 2 + 500


@pytest.fixture(
    params=[("c", {}), ("c", {"_release_gil": True}), ("py", {})],
    ids=["c", "c-release-gil", "py"],
)
def make_shared_budget(request: pytest.FixtureRequest) -> Callable[..., Any]:
    engine_name, options = request.param
    engine = load_engine(engine_name)

    def build(windows: list[Window], **kwargs: Any) -> Any:
        return engine(windows, **options, **kwargs)

    return build


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Make the interpreter switch threads as often as it can."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@dataclass
class Tally:
    """What one thread was told: admitted amounts, refusals, and any fault."""

    tokens: int = 0
    nanos: int = 0
    admitted: int = 0
    refused: int = 0
    faults: list[str] = field(default_factory=list)


def within_caps(budget: Any) -> list[str]:
    """Return a description of every cap a snapshot shows exceeded."""
    faults = []
    for snap in budget.snapshot():
        for used, cap, axis in (
            (snap.tokens_used, snap.token_cap, "tokens"),
            (snap.usd_used, snap.usd_cap, "usd"),
            (snap.requests_used, snap.request_cap, "requests"),
        ):
            if cap is not None and used > cap:
                faults.append(f"{snap.name}: {axis} {used!r} > cap {cap!r}")
    return faults


def run_threads(work: Callable[[int, threading.Barrier], None]) -> None:
    barrier = threading.Barrier(THREADS)
    threads = [
        threading.Thread(target=work, args=(seed, barrier), daemon=True)
        for seed in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.usefixtures("frequent_thread_switches")
def test_concurrent_try_record_never_exceeds_a_cap_and_loses_nothing(
    make_shared_budget: Callable[..., Any],
) -> None:
    budget = make_shared_budget(
        [
            Window("hour", 3_600, token_cap=TOKEN_CAP, usd_cap=USD_CAP),
            Window("day", 86_400, request_cap=REQUEST_CAP),
            Window("count", 86_400),
        ]
    )
    tallies = [Tally() for _ in range(THREADS)]

    def work(seed: int, barrier: threading.Barrier) -> None:
        rng = random.Random(seed)
        tally = tallies[seed]
        barrier.wait()
        try:
            for attempt in range(ATTEMPTS_PER_THREAD):
                tokens = rng.randrange(1, 200)
                usd = rng.randrange(0, 20_001) / 1_000_000
                breach = budget.try_record(tokens, usd)
                if breach is None:
                    tally.tokens += tokens
                    tally.nanos += round(Fraction(usd) * NANOS)
                    tally.admitted += 1
                else:
                    tally.refused += 1
                    if not breach.attempted > breach.cap:
                        tally.faults.append(f"breach within its cap: {breach!r}")
                if attempt % 100 == 0:
                    tally.faults.extend(within_caps(budget))
                    budget.retry_after(tokens, usd)
        except Exception as exc:  # reported below, with the thread's seed
            tally.faults.append(f"thread {seed}: {exc!r}")

    run_threads(work)

    assert [fault for tally in tallies for fault in tally.faults] == []
    admitted_tokens = sum(t.tokens for t in tallies)
    admitted_nanos = sum(t.nanos for t in tallies)
    admitted = sum(t.admitted for t in tallies)
    hour, day, count = budget.snapshot()
    for snap in (hour, day, count):
        assert snap.tokens_used == admitted_tokens
        assert snap.usd_used == admitted_nanos / NANOS
        assert snap.requests_used == admitted
    assert hour.tokens_used <= TOKEN_CAP
    assert admitted_nanos <= USD_CAP * NANOS
    assert day.requests_used <= REQUEST_CAP
    assert admitted + sum(t.refused for t in tallies) == THREADS * ATTEMPTS_PER_THREAD
    # The caps bound: both outcomes happened.
    assert 0 < admitted < THREADS * ATTEMPTS_PER_THREAD


@pytest.mark.usefixtures("frequent_thread_switches")
def test_concurrent_record_raises_exactly_for_the_calls_it_did_not_commit(
    make_shared_budget: Callable[..., Any],
) -> None:
    budget = make_shared_budget([Window("hour", 3_600, token_cap=TOKEN_CAP // 4)])
    tallies = [Tally() for _ in range(THREADS)]

    def work(seed: int, barrier: threading.Barrier) -> None:
        rng = random.Random(1_000 + seed)
        tally = tallies[seed]
        barrier.wait()
        for _ in range(ATTEMPTS_PER_THREAD // 2):
            tokens = rng.randrange(1, 200)
            try:
                budget.record(tokens)
            except WindowBreached:
                tally.refused += 1
            else:
                tally.tokens += tokens
                tally.admitted += 1

    run_threads(work)

    [snap] = budget.snapshot()
    assert snap.tokens_used == sum(t.tokens for t in tallies)
    assert snap.requests_used == sum(t.admitted for t in tallies)
    assert snap.tokens_used <= TOKEN_CAP // 4
    assert sum(t.refused for t in tallies) > 0


@pytest.mark.usefixtures("frequent_thread_switches")
def test_caps_hold_under_concurrency_while_records_age_out(
    make_shared_budget: Callable[..., Any],
) -> None:
    budget = make_shared_budget(
        [
            Window("1ms", 0.001, token_cap=500, request_cap=20),
            Window("5ms", 0.005, token_cap=1_500, usd_cap=0.05),
        ]
    )
    tallies = [Tally() for _ in range(THREADS)]

    def work(seed: int, barrier: threading.Barrier) -> None:
        rng = random.Random(2_000 + seed)
        tally = tallies[seed]
        barrier.wait()
        try:
            for attempt in range(ATTEMPTS_PER_THREAD // 2):
                breach = budget.try_record(
                    rng.randrange(0, 100), rng.randrange(0, 5_000) / 1_000_000
                )
                if breach is None:
                    tally.admitted += 1
                else:
                    tally.refused += 1
                if attempt % 10 == 0:
                    tally.faults.extend(within_caps(budget))
        except Exception as exc:  # reported below, with the thread's seed
            tally.faults.append(f"thread {seed}: {exc!r}")

    run_threads(work)

    assert [fault for tally in tallies for fault in tally.faults] == []
    assert sum(t.admitted for t in tallies) > 0
    assert sum(t.refused for t in tallies) > 0


def test_clock_is_never_called_inside_the_critical_section(
    make_shared_budget: Callable[..., Any],
) -> None:
    # A clock that calls back into the same budget would deadlock if it were
    # called with the budget's lock held.
    budget: Any = None

    def reentrant_clock() -> float:
        budget.snapshot(now=0)
        budget.check(0, now=0)
        return 1.0

    budget = make_shared_budget([Window("w", 10, token_cap=5)], clock=reentrant_clock)
    outcome: list[object] = []

    def use_budget() -> None:
        budget.record(5)
        outcome.append(budget.try_record(1))
        outcome.append(budget.retry_after(1))
        outcome.append(budget.snapshot()[0].tokens_used)

    worker = threading.Thread(target=use_budget, daemon=True)
    worker.start()
    worker.join(timeout=60)  # a deadlock guard, not a speed measure

    assert not worker.is_alive(), "a budget method deadlocked on a re-entrant clock"
    assert outcome[0] is not None
    assert outcome[1:] == [10.0, 5]
