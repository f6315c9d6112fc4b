"""Admission, time, breaches and snapshots of BudgetWindows, on every engine."""

from __future__ import annotations

import copy
import math
import pickle
import time
from decimal import Decimal

import pytest

from llm_budget_window import (
    Axis,
    Breach,
    Window,
    WindowBreached,
    WindowSnapshot,
)
from tests.conftest import BudgetFactory, ManualClock, ns

# -- windows and the default clock ----------------------------------------------


def test_windows_property_is_the_declared_windows_in_order(
    make_budget: BudgetFactory,
) -> None:
    windows = [Window("day", 86_400), Window("minute", 60), Window("hour", 3_600)]

    budget = make_budget(iter(windows))

    assert budget.windows == tuple(windows)
    assert type(budget.windows) is tuple


def test_default_clock_is_the_monotonic_clock_in_nanoseconds(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10)])

    before = time.monotonic_ns()
    budget.record(5)
    after = time.monotonic_ns()

    # The record's time t lies in [before, after]: inside at before + d - 1 ns,
    # aged out at after + d.
    assert budget.snapshot(now=ns(before + 10**10 - 1))[0].tokens_used == 5
    assert budget.snapshot(now=ns(after + 10**10))[0].tokens_used == 0


def test_clock_callable_gives_the_time_when_now_is_omitted(
    make_budget: BudgetFactory, clock: ManualClock
) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)], clock=clock)
    clock.value = 100.0
    budget.record(100)

    clock.value = 109.5
    assert budget.snapshot()[0].tokens_used == 100
    clock.value = 110
    assert budget.snapshot()[0].tokens_used == 0


def test_explicit_now_overrides_the_clock(
    make_budget: BudgetFactory, clock: ManualClock
) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)], clock=clock)
    clock.value = 1_000

    budget.record(100, now=0)

    assert budget.snapshot(now=9)[0].tokens_used == 100
    assert budget.snapshot(now=10)[0].tokens_used == 0


def test_exception_from_the_clock_propagates_and_commits_nothing(
    make_budget: BudgetFactory,
) -> None:
    def broken_clock() -> float:
        raise RuntimeError("clock is broken")

    budget = make_budget([Window("w", 10)], clock=broken_clock)

    with pytest.raises(RuntimeError, match="clock is broken"):
        budget.record(5)
    assert budget.snapshot(now=0)[0].tokens_used == 0


# -- the boundary of a window ----------------------------------------------------


def test_record_is_inside_its_window_one_nanosecond_before_the_duration(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)])
    budget.record(100, now=0)

    [snap] = budget.snapshot(now=Decimal("9.999999999"))

    assert snap.tokens_used == 100
    assert snap.requests_used == 1


def test_record_ages_out_at_exactly_the_duration(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)])
    budget.record(100, now=0)

    [snap] = budget.snapshot(now=10)

    assert snap.tokens_used == 0
    assert snap.requests_used == 0
    assert snap.entry_count == 0


def test_full_window_refuses_until_the_duration_and_admits_at_it(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)])
    budget.record(100, now=5)

    refused = budget.try_record(1, now=Decimal("14.999999999"))
    admitted = budget.try_record(1, now=15)

    assert refused is not None
    assert refused.retry_after == 1e-9
    assert admitted is None


def test_boundary_holds_for_a_window_of_one_nanosecond(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", Decimal("0.000000001"), request_cap=1)])

    assert budget.try_record(0, now=ns(7)) is None
    breach = budget.try_record(0, now=ns(7))
    assert breach is not None
    assert breach.retry_after == 1e-9
    assert budget.try_record(0, now=ns(8)) is None


def test_each_window_ages_records_out_on_its_own_duration(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("s", 1), Window("m", 60), Window("h", 3_600)])
    budget.record(7, now=0)

    used = [
        [s.tokens_used for s in budget.snapshot(now=t)] for t in (0, 1, 59, 60, 3_600)
    ]

    assert used == [[7, 7, 7], [0, 7, 7], [0, 7, 7], [0, 0, 7], [0, 0, 0]]


def test_sums_stay_exact_across_ring_growth_and_eviction(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("short", 10), Window("long", 100)])
    for t in range(1_000):
        budget.record(t, usd=Decimal(t).scaleb(-9), now=t)

    short, long = budget.snapshot(now=999)
    assert (short.tokens_used, short.requests_used) == (sum(range(990, 1_000)), 10)
    assert (long.tokens_used, long.requests_used) == (sum(range(900, 1_000)), 100)
    assert long.usd_used == sum(range(900, 1_000)) / 10**9

    short, long = budget.snapshot(now=1_050)
    assert (short.tokens_used, long.tokens_used) == (0, sum(range(951, 1_000)))

    budget.record(3, now=2_000)
    short, long = budget.snapshot(now=2_000)
    assert (short.tokens_used, long.tokens_used) == (3, 3)
    assert (short.requests_used, long.requests_used) == (1, 1)


# -- admission ---------------------------------------------------------------------


def test_reaching_a_cap_exactly_is_allowed(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 60, token_cap=100, usd_cap=1, request_cap=2)])

    assert budget.try_record(60, usd=0.5, now=0) is None
    assert budget.try_record(40, usd=0.5, now=1) is None

    [snap] = budget.snapshot(now=1)
    assert (snap.tokens_used, snap.usd_used, snap.requests_used) == (100, 1.0, 2)


def test_one_unit_over_a_cap_is_refused(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 60, token_cap=100)])
    budget.record(100, now=0)

    breach = budget.try_record(1, now=0)

    assert breach is not None
    assert (breach.axis, breach.attempted, breach.cap) == (Axis.TOKENS, 101, 100)


def test_every_call_counts_one_request_whatever_its_amounts(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 60, request_cap=3)])

    for _ in range(3):
        budget.record(0, now=0)
    breach = budget.try_record(0, now=0)

    assert breach is not None
    assert breach.axis is Axis.REQUESTS
    assert budget.snapshot(now=0)[0].requests_used == 3


def test_zero_token_cap_admits_only_zero_tokens(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 60, token_cap=0)])

    assert budget.try_record(0, usd=5, now=0) is None
    breach = budget.try_record(1, now=0)

    assert breach is not None
    assert breach.retry_after == math.inf


def test_refusal_by_a_later_window_commits_nothing_to_an_earlier_one(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget(
        [Window("short", 1, token_cap=100), Window("long", 60, token_cap=150)]
    )
    budget.record(100, now=0)

    # 60 tokens fit the short window (now empty) but not the long one.
    breach = budget.try_record(60, now=1)

    assert breach is not None
    assert breach.window_name == "long"
    short, long = budget.snapshot(now=1)
    assert (short.tokens_used, short.requests_used) == (0, 0)
    assert (long.tokens_used, long.requests_used) == (100, 1)


def test_refusal_on_one_axis_commits_nothing_on_the_others(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("a", 60, token_cap=1_000), Window("b", 60, usd_cap=1)])
    budget.record(10, usd=0.9, now=0)

    with pytest.raises(WindowBreached):
        budget.record(10, usd=0.2, now=0)

    a, b = budget.snapshot(now=0)
    assert (a.tokens_used, a.usd_used, a.requests_used) == (10, 0.9, 1)
    assert (b.tokens_used, b.usd_used, b.requests_used) == (10, 0.9, 1)


def test_admitted_call_is_committed_to_every_window(make_budget: BudgetFactory) -> None:
    budget = make_budget(
        [Window("a", 1, token_cap=50), Window("b", 60), Window("c", 3_600, usd_cap=5)]
    )

    budget.record(40, usd=Decimal("1.5"), now=0)

    for snap in budget.snapshot(now=0):
        assert (snap.tokens_used, snap.usd_used, snap.requests_used) == (40, 1.5, 1)


# -- which breach is reported, and its fields -------------------------------------


def test_breach_names_the_first_declared_window_that_does_not_fit(
    make_budget: BudgetFactory,
) -> None:
    windows = [Window("long", 60, token_cap=10), Window("short", 1, token_cap=10)]
    forward = make_budget(windows)
    backward = make_budget(windows[::-1])

    forward_breach = forward.try_record(11, now=0)
    backward_breach = backward.try_record(11, now=0)

    assert forward_breach is not None
    assert forward_breach.window_name == "long"
    assert backward_breach is not None
    assert backward_breach.window_name == "short"


def test_breach_skips_windows_that_fit(make_budget: BudgetFactory) -> None:
    budget = make_budget(
        [
            Window("roomy", 60, token_cap=1_000),
            Window("tight", 60, usd_cap=1),
            Window("tighter", 60, token_cap=5),
        ]
    )

    breach = budget.try_record(10, usd=2, now=0)

    assert breach is not None
    assert (breach.window_name, breach.axis) == ("tight", Axis.USD)


@pytest.mark.parametrize(
    ("tokens", "usd", "calls_before", "axis"),
    [
        (11, 2, 5, Axis.TOKENS),
        (10, 2, 5, Axis.USD),
        (10, 1, 5, Axis.REQUESTS),
    ],
    ids=["tokens-before-usd-and-requests", "usd-before-requests", "requests"],
)
def test_breach_reports_axes_in_the_order_tokens_usd_requests(
    make_budget: BudgetFactory, tokens: int, usd: int, calls_before: int, axis: Axis
) -> None:
    budget = make_budget([Window("w", 60, token_cap=10, usd_cap=1, request_cap=5)])
    for _ in range(calls_before):
        budget.record(0, now=0)

    breach = budget.try_record(tokens, usd=usd, now=0)

    assert breach is not None
    assert breach.axis is axis


def test_token_breach_carries_every_field(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("minute", 60, token_cap=1_000, usd_cap=1)])
    budget.record(700, usd=0.5, now=0)
    budget.record(200, usd=0.25, now=10)

    breach = budget.try_record(200, usd=0.1, now=20)

    # Once the record at t=0 ages out (t=60), 400 tokens remain: wait 40 s.
    assert breach == Breach(
        window_name="minute",
        axis=Axis.TOKENS,
        attempted=1_100,
        cap=1_000,
        used=900,
        requested=200,
        retry_after=40.0,
    )
    assert [type(v) for v in (breach.attempted, breach.cap, breach.used)] == [int] * 3
    assert type(breach.requested) is int
    assert type(breach.retry_after) is float


def test_usd_breach_carries_every_field_in_float_dollars(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("minute", 60, usd_cap=1)])
    budget.record(0, usd=0.7, now=0)
    budget.record(0, usd=0.2, now=5)

    breach = budget.try_record(0, usd=0.2, now=6)

    assert breach == Breach(
        window_name="minute",
        axis=Axis.USD,
        attempted=1.1,
        cap=1.0,
        used=0.9,
        requested=0.2,
        retry_after=54.0,
    )
    assert type(breach.attempted) is float
    assert type(breach.cap) is float


def test_request_breach_carries_every_field(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("burst", 1, request_cap=2)])
    budget.record(5, now=0)
    budget.record(5, now=Decimal("0.25"))

    breach = budget.try_record(5, now=Decimal("0.5"))

    assert breach == Breach(
        window_name="burst",
        axis=Axis.REQUESTS,
        attempted=3,
        cap=2,
        used=2,
        requested=1,
        retry_after=0.5,
    )


def test_axis_is_a_str_enum_of_tokens_usd_requests() -> None:
    assert [axis.value for axis in Axis] == ["tokens", "usd", "requests"]
    assert Axis("usd") is Axis.USD
    assert Axis.TOKENS == "tokens"
    assert str(Axis.REQUESTS) == "requests"


# -- record and WindowBreached ----------------------------------------------------


def test_record_returns_none_when_admitted(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 60, token_cap=10)])

    assert budget.record(10, now=0) is None


def test_record_raises_window_breached_carrying_the_try_record_breach(
    make_budget: BudgetFactory,
) -> None:
    windows = [Window("minute", 60, token_cap=1_000, usd_cap=1)]
    raising, returning = make_budget(windows), make_budget(windows)
    for budget in (raising, returning):
        budget.record(700, usd=0.5, now=0)
        budget.record(200, usd=0.25, now=10)

    expected = returning.try_record(200, usd=0.1, now=20)
    with pytest.raises(WindowBreached) as caught:
        raising.record(200, usd=0.1, now=20)

    assert expected is not None
    assert caught.value.breach == expected
    assert caught.value.window_name == "minute"
    assert caught.value.axis is Axis.TOKENS
    assert caught.value.attempted == 1_100
    assert caught.value.cap == 1_000
    assert caught.value.used == 900
    assert caught.value.requested == 200
    assert caught.value.retry_after == 40.0


def test_record_that_raises_commits_nothing(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("a", 60), Window("b", 60, token_cap=10)])
    budget.record(8, usd=1, now=0)
    before = budget.snapshot(now=0)

    with pytest.raises(WindowBreached):
        budget.record(3, usd=1, now=0)

    assert budget.snapshot(now=0) == before


def test_window_breached_str_names_window_axis_attempted_and_cap(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("minute", 60, token_cap=1_000)])
    budget.record(900, now=0)

    with pytest.raises(WindowBreached) as caught:
        budget.record(200, now=0)

    message = str(caught.value)
    assert "'minute'" in message
    assert "tokens" in message
    assert "1100" in message
    assert "1000" in message


def test_window_breached_str_shows_usd_in_dollars(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("hour", 3_600, usd_cap=10)])
    budget.record(0, usd=9.5, now=0)

    with pytest.raises(WindowBreached) as caught:
        budget.record(0, usd=1, now=0)

    message = str(caught.value)
    assert "'hour'" in message
    assert "usd" in message
    assert "10.5" in message
    assert "10.0" in message


def test_window_breached_is_an_exception_that_survives_pickling(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 60, request_cap=0)])

    with pytest.raises(WindowBreached) as caught:
        budget.record(0, now=0)
    copy = pickle.loads(pickle.dumps(caught.value))

    assert isinstance(caught.value, Exception)
    assert copy.breach == caught.value.breach
    assert str(copy) == str(caught.value)


# -- retry_after -------------------------------------------------------------------


def test_retry_after_is_zero_when_the_call_fits_now(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 60, token_cap=100)])
    budget.record(50, now=0)

    wait = budget.retry_after(50, now=1)

    assert wait == 0.0
    assert type(wait) is float


def test_retry_after_waits_for_the_oldest_record_to_age_out(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)])
    budget.record(100, now=0)

    assert budget.retry_after(1, now=3) == 7.0


def test_retry_after_waits_for_as_many_records_as_needed(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10, token_cap=120)])
    for t in (0, 2, 4):
        budget.record(40, now=t)

    # 120 + 90 - 120 = 90 must age out: the records at 0, 2 and 4, so t = 14.
    assert budget.retry_after(90, now=5) == 9.0
    assert budget.retry_after(70, now=5) == 7.0
    assert budget.retry_after(40, now=5) == 5.0
    assert budget.retry_after(0, now=5) == 0.0


def test_retry_after_is_the_longest_wait_over_every_window(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget(
        [Window("short", 10, token_cap=100), Window("long", 60, token_cap=150)]
    )
    budget.record(100, now=0)

    breach = budget.try_record(100, now=1)

    assert breach is not None
    assert breach.window_name == "short"
    assert breach.retry_after == 59.0
    assert budget.retry_after(100, now=1) == 59.0


def test_retry_after_counts_every_capped_axis(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 10, token_cap=100, usd_cap=1, request_cap=3)])
    budget.record(0, usd=0.9, now=0)
    budget.record(90, usd=0, now=2)
    budget.record(0, usd=0, now=4)

    assert budget.retry_after(5, usd=0.05, now=5) == 5.0  # requests: wait for t=0
    assert budget.retry_after(15, usd=0, now=5) == 7.0  # tokens: wait for t=2
    assert budget.retry_after(0, usd=0.2, now=5) == 5.0  # usd: wait for t=0


def test_retry_after_is_fractional_seconds_to_the_nanosecond(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", Decimal("0.25"), token_cap=1)])
    budget.record(1, now=100)

    assert budget.retry_after(1, now=Decimal("100.000000123")) == 0.249999877


# 200 days and 1 ns: the nearest float, 17280000.0 s, is 1 ns short.
LONG_WAIT_NS = 17_280_000_000_000_001


def test_retry_after_beyond_52_days_rounds_up_to_a_float_that_is_not_short(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", ns(LONG_WAIT_NS), request_cap=1)])
    budget.record(0, now=0)

    wait = budget.retry_after(0, now=0)
    breach = budget.check(0, now=0)

    assert wait == math.nextafter(17_280_000.0, math.inf)
    assert breach is not None
    assert breach.retry_after == wait


def test_a_call_retry_after_seconds_later_fits_beyond_52_days(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", ns(LONG_WAIT_NS), request_cap=1)])
    budget.record(0, now=0)
    wait = budget.retry_after(0, now=0)

    assert budget.check(0, now=math.nextafter(wait, 0.0)) is not None
    assert budget.check(0, now=wait) is None


def test_retry_after_is_infinite_when_the_call_alone_exceeds_a_cap(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10, token_cap=100, usd_cap=1)])

    assert budget.retry_after(101, now=0) == math.inf
    assert budget.retry_after(0, usd=Decimal("1.000000001"), now=0) == math.inf
    breach = budget.try_record(101, now=0)
    assert breach is not None
    assert breach.retry_after == math.inf


def test_retry_after_is_infinite_if_any_window_can_never_fit(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget(
        [Window("busy", 10, token_cap=100), Window("small", 60, token_cap=50)]
    )
    budget.record(40, now=0)

    breach = budget.try_record(70, now=1)

    assert budget.retry_after(70, now=1) == math.inf
    assert breach is not None
    assert breach.window_name == "busy"
    assert breach.retry_after == math.inf


def test_retry_after_is_infinite_under_a_request_cap_of_zero(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10, request_cap=0)])

    assert budget.retry_after(0, now=0) == math.inf


def test_retry_after_commits_nothing(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)])
    budget.record(30, now=0)

    budget.retry_after(50, now=1)

    [snap] = budget.snapshot(now=1)
    assert (snap.tokens_used, snap.requests_used) == (30, 1)


# -- check ---------------------------------------------------------------------------


def test_check_returns_none_and_commits_nothing_when_the_call_fits(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10, token_cap=100, request_cap=1)])

    assert budget.check(100, usd=3, now=0) is None
    assert budget.check(100, usd=3, now=0) is None

    [snap] = budget.snapshot(now=0)
    assert (snap.tokens_used, snap.usd_used, snap.requests_used) == (0, 0.0, 0)


def test_check_returns_the_breach_try_record_would_and_commits_nothing(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10, token_cap=100)])
    budget.record(80, now=0)

    checked = budget.check(30, now=2)
    before = budget.snapshot(now=2)
    tried = budget.try_record(30, now=2)

    assert checked == Breach("w", Axis.TOKENS, 110, 100, 80, 30, 8.0)
    assert tried == checked
    assert budget.snapshot(now=2) == before


# -- reset ---------------------------------------------------------------------------


def test_reset_empties_every_window(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("a", 10, token_cap=100), Window("b", 60, usd_cap=1)])
    budget.record(100, usd=1, now=0)

    budget.reset()

    for snap in budget.snapshot(now=0):
        assert (snap.tokens_used, snap.usd_used, snap.requests_used) == (0, 0.0, 0)
    assert budget.try_record(100, usd=1, now=0) is None


def test_reset_forgets_the_latest_time_seen(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 10)])
    budget.record(1, now=100)

    budget.reset()
    budget.record(5, now=0)

    # Had the latest time (100) been kept, the record would sit at 100.
    assert budget.snapshot(now=9)[0].tokens_used == 5
    assert budget.snapshot(now=10)[0].tokens_used == 0


# -- time never runs backwards --------------------------------------------------------


def test_record_with_an_earlier_now_is_counted_at_the_newest_time(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10)])
    budget.record(5, now=100)

    budget.record(7, now=50)

    assert budget.snapshot(now=Decimal("109.999999999"))[0].tokens_used == 12
    assert budget.snapshot(now=110)[0].tokens_used == 0


def test_snapshot_with_an_earlier_now_reads_the_newest_time(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10)])
    budget.record(5, now=100)

    assert budget.snapshot(now=0)[0].tokens_used == 5


def test_evicted_record_does_not_return_for_an_earlier_now(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10)])
    budget.record(5, now=0)
    budget.snapshot(now=20)

    assert budget.snapshot(now=5)[0].tokens_used == 0


@pytest.mark.parametrize("method", ["check", "retry_after", "snapshot"])
def test_non_committing_calls_also_advance_the_latest_time(
    make_budget: BudgetFactory, method: str
) -> None:
    budget = make_budget([Window("w", 10)])
    if method == "snapshot":
        budget.snapshot(now=200)
    else:
        getattr(budget, method)(0, now=200)

    budget.record(1, now=0)

    assert budget.snapshot(now=Decimal("209.999999999"))[0].tokens_used == 1
    assert budget.snapshot(now=210)[0].tokens_used == 0


def test_retry_after_is_measured_from_the_newest_time(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 10, token_cap=1)])
    budget.record(1, now=100)

    assert budget.retry_after(1, now=0) == 10.0


def test_clock_running_backwards_is_clamped(
    make_budget: BudgetFactory, clock: ManualClock
) -> None:
    budget = make_budget([Window("w", 10, token_cap=2)], clock=clock)
    clock.value = 50
    budget.record(1)
    clock.value = 45
    budget.record(1)

    clock.value = 59.5
    assert budget.snapshot()[0].tokens_used == 2
    clock.value = 60
    assert budget.snapshot()[0].tokens_used == 0


def test_negative_now_is_a_valid_time(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 10)])
    budget.record(4, now=-100)

    assert budget.snapshot(now=-91)[0].tokens_used == 4
    assert budget.snapshot(now=-90)[0].tokens_used == 0


# -- counter-only windows ------------------------------------------------------------


def test_window_without_caps_counts_without_refusing(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("count", 60)])

    for i in range(100):
        assert (
            budget.try_record(10**15 + i, usd=Decimal("1000.000000001"), now=0) is None
        )
    assert budget.check(2**62 - 1, usd=1_000_000, now=0) is None
    assert budget.retry_after(2**62 - 1, usd=1_000_000, now=0) == 0.0

    [snap] = budget.snapshot(now=0)
    assert snap.tokens_used == 100 * 10**15 + sum(range(100))
    assert snap.usd_used == 100_000.0000001
    assert snap.requests_used == 100
    assert (snap.token_cap, snap.usd_cap, snap.request_cap) == (None, None, None)
    remaining = (snap.tokens_remaining, snap.usd_remaining, snap.requests_remaining)
    assert remaining == (None, None, None)


def test_counter_window_beside_capped_windows_counts_only_admitted_calls(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("count", 60), Window("capped", 60, token_cap=10)])

    budget.try_record(6, now=0)
    budget.try_record(6, now=0)

    count, capped = budget.snapshot(now=0)
    assert (count.tokens_used, count.requests_used) == (6, 1)
    assert (capped.tokens_used, capped.requests_used) == (6, 1)


def test_uncapped_sum_that_would_pass_int64_raises_overflow_and_commits_nothing(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("count", 60)])
    budget.record(2**62 - 1, now=0)
    budget.record(2**62 - 1, now=0)

    with pytest.raises(OverflowError, match="'count'"):
        budget.try_record(2, now=0)

    [snap] = budget.snapshot(now=0)
    assert (snap.tokens_used, snap.requests_used) == (2**63 - 2, 2)
    assert budget.try_record(1, now=0) is None


# -- snapshot ------------------------------------------------------------------------


def test_snapshot_reports_every_field_of_every_window_in_order(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget(
        [
            Window(
                "minute", 60, token_cap=1_000, usd_cap=Decimal("0.3"), request_cap=5
            ),
            Window("day", 86_400),
        ]
    )
    budget.record(250, usd=0.1, now=0)
    budget.record(150, usd=0, now=30)

    assert budget.snapshot(now=59) == [
        WindowSnapshot(
            name="minute",
            duration=60.0,
            tokens_used=400,
            usd_used=0.1,
            requests_used=2,
            token_cap=1_000,
            usd_cap=0.3,
            request_cap=5,
            entry_count=2,
            tokens_remaining=600,
            usd_remaining=0.2,
            requests_remaining=3,
        ),
        WindowSnapshot(
            name="day",
            duration=86_400.0,
            tokens_used=400,
            usd_used=0.1,
            requests_used=2,
            token_cap=None,
            usd_cap=None,
            request_cap=None,
            entry_count=2,
            tokens_remaining=None,
            usd_remaining=None,
            requests_remaining=None,
        ),
    ]


def test_snapshot_amount_types_are_int_tokens_and_float_dollars(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 60, token_cap=10, usd_cap=1, request_cap=2)])
    budget.record(3, usd=Decimal("0.25"), now=0)

    [snap] = budget.snapshot(now=0)

    assert type(snap.tokens_used) is int
    assert type(snap.requests_used) is int
    assert type(snap.entry_count) is int
    assert type(snap.tokens_remaining) is int
    assert type(snap.usd_used) is float
    assert type(snap.usd_remaining) is float
    assert type(snap.duration) is float


def test_snapshot_headroom_is_zero_at_a_full_cap(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 60, token_cap=10, usd_cap=0.3, request_cap=2)])
    budget.record(4, usd=0.1, now=0)
    budget.record(6, usd=0.2, now=0)

    [snap] = budget.snapshot(now=0)

    assert (snap.tokens_remaining, snap.usd_remaining, snap.requests_remaining) == (
        0,
        0.0,
        0,
    )


def test_snapshot_of_a_new_budget_reads_zero_everywhere(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("w", 60, token_cap=10, usd_cap=2, request_cap=2)])

    [snap] = budget.snapshot(now=0)

    assert (snap.tokens_used, snap.usd_used, snap.requests_used) == (0, 0.0, 0)
    assert snap.entry_count == 0
    assert (snap.tokens_remaining, snap.usd_remaining, snap.requests_remaining) == (
        10,
        2.0,
        2,
    )


def test_budget_repr_lists_its_windows(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 60, token_cap=10)])

    assert repr(budget) == "BudgetWindows([Window('w', duration=60.0, token_cap=10)])"


SKIPPED_INIT = (
    "Skipping.__init__ was never called, so the budget has no windows "
    "(a subclass must call super().__init__)"
)


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("record", (1,)),
        ("try_record", (1,)),
        ("check", (1,)),
        ("retry_after", (1,)),
        ("reserve", (1,)),
        ("snapshot", ()),
        ("reset", ()),
    ],
)
def test_subclass_that_skips_init_raises_runtime_error_on_use(
    make_budget: BudgetFactory, method: str, args: tuple[int, ...]
) -> None:
    engine = type(make_budget([Window("w", 60)]))

    class Skipping(engine):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            pass

    with pytest.raises(RuntimeError) as raised:
        getattr(Skipping(), method)(*args)

    assert str(raised.value) == SKIPPED_INIT


def test_snapshot_survives_copy_and_pickling(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 60, token_cap=10)])
    budget.record(3, usd=0.5, now=0)
    [snap] = budget.snapshot(now=0)

    assert copy.copy(snap) == snap
    assert pickle.loads(pickle.dumps(snap)) == snap
