"""Exact money: USD held as whole nano-dollars, rounded half-to-even, no drift."""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_budget_window import Axis, Window
from tests.conftest import BudgetFactory

NANOS = 10**9

# Below 2**62 nano-dollars: the largest USD amount one call may carry.
MAX_USD = Fraction(2**62 - 1, NANOS)


def exact_nanos(usd: object) -> int:
    """The contract's conversion: exact value times 1e9, rounded half-to-even."""
    return round(Fraction(usd) * NANOS)  # type: ignore[arg-type]


def test_ten_cents_then_twenty_cents_fill_a_thirty_cent_cap_exactly(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 60, usd_cap=0.3)])

    assert budget.try_record(0, usd=0.1, now=0) is None
    assert budget.try_record(0, usd=0.2, now=0) is None

    [snap] = budget.snapshot(now=0)
    assert snap.usd_used == 0.3
    assert snap.usd_remaining == 0.0


def test_one_nano_dollar_over_a_full_cap_is_refused(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 60, usd_cap=0.3)])
    budget.record(0, usd=0.1, now=0)
    budget.record(0, usd=0.2, now=0)

    breach = budget.check(0, usd=1e-9, now=0)

    assert breach is not None
    assert breach.axis is Axis.USD
    assert breach.attempted == 0.300000001
    assert breach.used == 0.3
    assert breach.requested == 1e-9


def test_usd_reads_back_converted_once_from_the_exact_sum(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 60)])
    for _ in range(10):
        budget.record(0, usd=0.1, now=0)

    # Summing the floats themselves would give 0.9999999999999999.
    assert budget.snapshot(now=0)[0].usd_used == 1.0


def test_window_reads_exactly_zero_after_thousands_of_float_costs_age_out(
    make_budget: BudgetFactory,
) -> None:
    rng = random.Random(20_231_001)
    budget = make_budget([Window("s", 10), Window("m", 60), Window("h", 3_600)])
    now = 0.0
    for _ in range(5_000):
        now += rng.uniform(0, 2)
        budget.record(rng.randrange(10_000), usd=rng.uniform(0, 0.05), now=now)

    snapshots = budget.snapshot(now=now + 3_600)

    for snap in snapshots:
        assert snap.usd_used == 0.0
        assert snap.tokens_used == 0
        assert snap.requests_used == 0
        assert snap.entry_count == 0


def test_running_sums_equal_the_exact_sum_of_the_float_costs_still_inside(
    make_budget: BudgetFactory,
) -> None:
    rng = random.Random(7)
    durations = (10, 60)
    budget = make_budget([Window(f"w{d}", d) for d in durations])
    records: list[tuple[int, int, float]] = []
    for step in range(3_000):
        at = step * 50_000_000  # 50 ms apart, in whole nanoseconds
        cost = rng.uniform(0, 0.05)
        tokens = rng.randrange(10_000)
        budget.record(tokens, usd=cost, now=Fraction(at, NANOS))
        records.append((at, tokens, cost))

    last = records[-1][0]
    snapshots = budget.snapshot(now=Fraction(last, NANOS))

    for snap, duration in zip(snapshots, durations, strict=True):
        inside = [r for r in records if last - r[0] < duration * NANOS]
        assert snap.requests_used == len(inside)
        assert snap.tokens_used == sum(r[1] for r in inside)
        assert snap.usd_used == sum(exact_nanos(r[2]) for r in inside) / NANOS


@pytest.mark.parametrize(
    ("usd", "expected_nanos"),
    [
        (Decimal("0.1"), 100_000_000),
        ("0.1", 100_000_000),
        ("  0.25 ", 250_000_000),
        (Decimal("1E-9"), 1),
        ("12345.678901234", 12_345_678_901_234),
        (Fraction(1, 3), 333_333_333),
        (3, 3_000_000_000),
    ],
    ids=[
        "decimal",
        "str",
        "str-with-spaces",
        "decimal-exponent",
        "str-long",
        "fraction",
        "int",
    ],
)
def test_usd_given_exactly_converts_exactly(
    make_budget: BudgetFactory, usd: object, expected_nanos: int
) -> None:
    budget = make_budget([Window("w", 60)])

    budget.record(0, usd=usd, now=0)

    assert budget.snapshot(now=0)[0].usd_used == expected_nanos / NANOS


@pytest.mark.parametrize(
    ("usd", "expected_nanos"),
    [
        (1 / 1024, 976_562),  # 976562.5 rounds down to even
        (3 / 1024, 2_929_688),  # 2929687.5 rounds up to even
        (Decimal("0.0000000005"), 0),
        (Decimal("0.0000000015"), 2),
        (Decimal("0.0000000025"), 2),
        ("0.0000000035", 4),
        (Fraction(1, 2 * NANOS), 0),
        (Fraction(3, 2 * NANOS), 2),
    ],
    ids=[
        "float-976562.5",
        "float-2929687.5",
        "decimal-0.5",
        "decimal-1.5",
        "decimal-2.5",
        "str-3.5",
        "fraction-0.5",
        "fraction-1.5",
    ],
)
def test_usd_tie_rounds_half_to_even(
    make_budget: BudgetFactory, usd: object, expected_nanos: int
) -> None:
    # Pin the exact count: the amount fits a cap of expected_nanos and not one
    # nano-dollar less.
    exact = Fraction(expected_nanos, NANOS)
    fits = make_budget([Window("w", 60, usd_cap=exact)])
    short = make_budget([Window("w", 60, usd_cap=max(exact - Fraction(1, NANOS), 0))])

    assert fits.check(0, usd=usd, now=0) is None
    if expected_nanos:
        assert short.check(0, usd=usd, now=0) is not None
    fits.record(0, usd=usd, now=0)
    assert fits.snapshot(now=0)[0].usd_used == expected_nanos / NANOS


def test_float_usd_is_taken_at_its_exact_binary_value(
    make_budget: BudgetFactory,
) -> None:
    # 0.0000000025 as a float is slightly above 2.5e-9, so it rounds up to 3,
    # where the Decimal 0.0000000025 (an exact tie) rounds to even, 2.
    assert Fraction(0.0000000025) > Fraction(25, 10**10)
    budget = make_budget([Window("w", 60, usd_cap=Fraction(2, NANOS))])

    assert budget.check(0, usd=Decimal("0.0000000025"), now=0) is None
    breach = budget.check(0, usd=0.0000000025, now=0)

    assert breach is not None
    assert breach.requested == 3e-9


def test_negative_zero_usd_counts_as_zero(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 60, usd_cap=0)])

    assert budget.try_record(0, usd=-0.0, now=0) is None
    assert budget.try_record(0, usd=Decimal("-0"), now=0) is None

    [snap] = budget.snapshot(now=0)
    assert snap.usd_used == 0.0
    assert snap.requests_used == 2


def test_usd_with_a_hugely_negative_exponent_rounds_to_zero(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 60, usd_cap=0)])

    assert budget.try_record(0, usd="1e-999999999", now=0) is None
    assert budget.try_record(0, usd=Decimal("4e-21"), now=0) is None
    assert budget.try_record(0, usd=Decimal("5e-10"), now=0) is None

    [snap] = budget.snapshot(now=0)
    assert snap.usd_used == 0.0
    assert snap.requests_used == 3


def test_largest_usd_amount_is_accepted(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 60)])

    budget.record(0, usd=Decimal("4611686018.427387903"), now=0)
    budget.record(0, usd=4_611_686_018, now=0)

    assert budget.snapshot(now=0)[0].usd_used == (2 * 2**62 - 1 - 427_387_904) / NANOS


def test_empty_window_reads_positive_zero_dollars(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 1, usd_cap=1)])
    budget.record(0, usd=0.3, now=0)

    [snap] = budget.snapshot(now=1)

    assert snap.usd_used == 0.0
    assert str(snap.usd_used) == "0.0"
    assert snap.usd_remaining == 1.0


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    usd=st.one_of(
        st.floats(min_value=0, max_value=10.0),
        st.floats(min_value=0, max_value=4.6e9),
        st.integers(0, 2**40).map(lambda n: (n + 0.5) / NANOS),
        st.integers(0, 2**30).map(lambda n: n / 1024),
    )
)
def test_float_usd_converts_to_round_half_even_of_its_exact_value(
    make_budget: BudgetFactory, usd: float
) -> None:
    expected = exact_nanos(usd)
    exact = Fraction(expected, NANOS)
    fits = make_budget([Window("w", 60, usd_cap=exact)])

    assert fits.check(0, usd=usd, now=0) is None
    if expected:
        short = make_budget([Window("w", 60, usd_cap=exact - Fraction(1, NANOS))])
        assert short.check(0, usd=usd, now=0) is not None


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    now=st.one_of(
        st.floats(min_value=-1e6, max_value=1e6),
        st.integers(-(2**40), 2**40).map(lambda n: (n + 0.5) / NANOS),
    )
)
def test_float_now_converts_to_round_half_even_of_its_exact_value(
    make_budget: BudgetFactory, now: float
) -> None:
    at = exact_nanos(now)
    budget = make_budget([Window("w", Fraction(1, NANOS), request_cap=1)])
    budget.record(0, now=now)

    # A record fills a 1 ns window only at its own time: here exactly `at`.
    assert budget.check(0, now=Fraction(at, NANOS)) is not None
    assert budget.check(0, now=Fraction(at + 1, NANOS)) is None
