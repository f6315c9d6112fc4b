"""Reservations: reserve an estimate, then settle the actual usage or release it.

Every test pins time with ``now=`` on the calls that take it; ``settle`` and
``release`` take no time: they correct every window that still holds the
record at the latest time the budget has seen.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

from llm_budget_window import (
    Axis,
    Reservation,
    ReservationError,
    Window,
    WindowBreached,
)

if TYPE_CHECKING:
    from tests.conftest import BudgetFactory


MINUTE = Window("minute", 60, token_cap=1_000, usd_cap=1, request_cap=10)
HOUR = Window("hour", 3600, token_cap=10_000, usd_cap=10, request_cap=100)


def usage(budget: Any, now: float) -> list[tuple[str, int, float, int]]:
    """Return (name, tokens, usd, requests) of every window at ``now`` seconds."""
    return [
        (s.name, s.tokens_used, s.usd_used, s.requests_used)
        for s in budget.snapshot(now=now)
    ]


# -- reserve -------------------------------------------------------------------


def test_reserve_counts_the_estimate_at_once_in_every_window(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE, HOUR])

    reservation = budget.reserve(100, "0.50", now=0)

    assert isinstance(reservation, Reservation)
    assert reservation.state == "open"
    assert reservation.tokens == 100
    assert reservation.usd == 0.5
    assert usage(budget, 0) == [("minute", 100, 0.5, 1), ("hour", 100, 0.5, 1)]


def test_reserve_that_does_not_fit_raises_window_breached_and_commits_nothing(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE, HOUR])
    budget.record(900, now=0)

    with pytest.raises(WindowBreached) as caught:
        budget.reserve(200, now=10)

    breach = caught.value.breach
    assert breach.window_name == "minute"
    assert breach.axis is Axis.TOKENS
    assert breach.used == 900
    assert breach.requested == 200
    assert breach.attempted == 1_100
    assert breach.cap == 1_000
    assert breach.retry_after == 50.0
    assert usage(budget, 10) == [("minute", 900, 0.0, 1), ("hour", 900, 0.0, 1)]


def test_reserve_that_fits_the_short_window_but_not_the_long_one_commits_nothing(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE, Window("hour", 3600, token_cap=1_500)])
    budget.record(1_000, now=0)

    with pytest.raises(WindowBreached) as caught:
        budget.reserve(600, now=60)

    assert caught.value.window_name == "hour"
    assert caught.value.axis is Axis.TOKENS
    assert usage(budget, 60) == [("minute", 0, 0.0, 0), ("hour", 1_000, 0.0, 1)]


# -- settle --------------------------------------------------------------------


def test_settle_up_replaces_the_estimate_by_the_larger_actual(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE, HOUR])
    reservation = budget.reserve(100, "0.10", now=0)

    reservation.settle(250, "0.25")

    assert reservation.state == "settled"
    assert reservation.tokens == 250
    assert reservation.usd == 0.25
    assert usage(budget, 1) == [("minute", 250, 0.25, 1), ("hour", 250, 0.25, 1)]


def test_settle_down_replaces_the_estimate_by_the_smaller_actual(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE, HOUR])
    reservation = budget.reserve(400, "0.40", now=0)

    reservation.settle(150, "0.15")

    assert reservation.tokens == 150
    assert reservation.usd == 0.15
    assert usage(budget, 1) == [("minute", 150, 0.15, 1), ("hour", 150, 0.15, 1)]


def test_settle_down_frees_room_for_new_calls(make_budget: BudgetFactory) -> None:
    budget = make_budget([MINUTE])
    reservation = budget.reserve(1_000, now=0)
    assert budget.check(300, now=1) is not None

    reservation.settle(700)

    assert budget.try_record(300, now=1) is None
    assert usage(budget, 1) == [("minute", 1_000, 0.0, 2)]


def test_settle_keeps_the_original_timestamp(make_budget: BudgetFactory) -> None:
    budget = make_budget([MINUTE])
    reservation = budget.reserve(100, now=0)
    budget.record(7, now=30)

    reservation.settle(500)

    assert usage(budget, 59) == [("minute", 507, 0.0, 2)]
    # The reserved call ages out at 0 + 60 s, not 60 s after the settle.
    assert usage(budget, 60) == [("minute", 7, 0.0, 1)]


def test_settle_after_the_record_aged_out_of_the_short_window_corrects_only_the_long(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE, HOUR])
    reservation = budget.reserve(100, "0.10", now=0)
    assert usage(budget, 61) == [("minute", 0, 0.0, 0), ("hour", 100, 0.1, 1)]

    reservation.settle(500, "0.50")

    assert reservation.state == "settled"
    assert usage(budget, 61) == [("minute", 0, 0.0, 0), ("hour", 500, 0.5, 1)]
    # When it ages out of the long window too, both read exactly zero.
    assert usage(budget, 3600) == [("minute", 0, 0.0, 0), ("hour", 0, 0.0, 0)]


def test_settle_after_the_record_aged_out_of_every_window_changes_nothing(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("minute", 60), Window("hour", 3600)])
    reservation = budget.reserve(100, now=0)
    # Enough later calls that the aged-out record's storage has been reused.
    for i in range(40):
        budget.record(1, now=3600 + i)

    reservation.settle(5_000)

    assert reservation.state == "settled"
    assert usage(budget, 3640) == [("minute", 40, 0.0, 40), ("hour", 40, 0.0, 40)]


def test_settle_after_reset_changes_nothing(make_budget: BudgetFactory) -> None:
    budget = make_budget([MINUTE])
    reservation = budget.reserve(100, now=0)
    budget.reset()
    budget.record(5, now=0)

    reservation.settle(900)

    assert usage(budget, 0) == [("minute", 5, 0.0, 1)]


def test_settle_never_fails_for_going_over_a_cap(make_budget: BudgetFactory) -> None:
    budget = make_budget([MINUTE])
    reservation = budget.reserve(800, "0.80", now=0)

    reservation.settle(1_500, "1.75")

    assert reservation.state == "settled"
    assert usage(budget, 1) == [("minute", 1_500, 1.75, 1)]


def test_overage_shows_used_above_cap_and_zero_remaining(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE])
    budget.reserve(800, "0.80", now=0).settle(1_500, "1.75")

    [snapshot] = budget.snapshot(now=1)

    assert snapshot.tokens_used == 1_500
    assert snapshot.usd_used == 1.75
    assert snapshot.tokens_remaining == 0
    assert snapshot.usd_remaining == 0.0
    assert snapshot.requests_remaining == 9


def test_overage_refuses_new_calls_until_it_ages_out(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE])
    budget.reserve(800, now=0).settle(1_500)

    with pytest.raises(WindowBreached) as caught:
        budget.record(1, now=1)

    breach = caught.value.breach
    assert breach.axis is Axis.TOKENS
    assert breach.used == 1_500
    assert breach.attempted == 1_501
    assert breach.cap == 1_000
    assert breach.retry_after == 59.0
    assert usage(budget, 1) == [("minute", 1_500, 0.0, 1)]


def test_overage_refuses_even_a_zero_token_call(make_budget: BudgetFactory) -> None:
    budget = make_budget([MINUTE])
    budget.reserve(800, now=0).settle(1_500)

    breach = budget.try_record(0, now=1)

    assert breach is not None
    assert breach.axis is Axis.TOKENS
    assert breach.used == 1_500
    assert breach.requested == 0
    assert breach.retry_after == 59.0
    assert usage(budget, 1) == [("minute", 1_500, 0.0, 1)]


def test_overage_decays_and_calls_are_admitted_again(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE])
    budget.reserve(800, now=0).settle(1_500)
    assert budget.try_record(1, now=59) is not None

    assert budget.try_record(1, now=60) is None

    [snapshot] = budget.snapshot(now=60)
    assert snapshot.tokens_used == 1
    assert snapshot.tokens_remaining == 999


# -- release -------------------------------------------------------------------


def test_release_removes_the_call_from_every_window_requests_included(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE, HOUR])
    reservation = budget.reserve(100, "0.50", now=0)
    budget.record(10, "0.01", now=1)

    reservation.release()

    assert reservation.state == "released"
    assert usage(budget, 2) == [("minute", 10, 0.01, 1), ("hour", 10, 0.01, 1)]


def test_release_frees_the_request_slot_for_a_new_call(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("second", 1, request_cap=1)])
    reservation = budget.reserve(0, now=0)
    assert budget.check(0, now=0.5) is not None

    reservation.release()

    assert budget.try_record(0, now=0.5) is None


def test_release_after_the_record_aged_out_of_the_short_window_corrects_only_the_long(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE, HOUR])
    reservation = budget.reserve(100, "0.10", now=0)
    budget.record(3, now=61)

    reservation.release()

    assert usage(budget, 61) == [("minute", 3, 0.0, 1), ("hour", 3, 0.0, 1)]


def test_released_record_aging_out_later_leaves_every_window_at_zero(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE, HOUR])
    budget.reserve(100, "0.10", now=0).release()

    assert usage(budget, 3600) == [("minute", 0, 0.0, 0), ("hour", 0, 0.0, 0)]


# -- once only -----------------------------------------------------------------


def test_second_settle_raises_reservation_error_and_changes_nothing(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE])
    reservation = budget.reserve(100, now=0)
    reservation.settle(200)

    with pytest.raises(ReservationError, match="already settled"):
        reservation.settle(300)

    assert reservation.state == "settled"
    assert reservation.tokens == 200
    assert usage(budget, 0) == [("minute", 200, 0.0, 1)]


def test_settle_after_release_raises_reservation_error_and_changes_nothing(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE])
    reservation = budget.reserve(100, now=0)
    reservation.release()

    with pytest.raises(ReservationError, match="already released"):
        reservation.settle(300)

    assert reservation.state == "released"
    assert usage(budget, 0) == [("minute", 0, 0.0, 0)]


def test_release_after_settle_raises_reservation_error_and_changes_nothing(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE])
    reservation = budget.reserve(100, now=0)
    reservation.settle(200)

    with pytest.raises(ReservationError, match="already settled"):
        reservation.release()

    assert reservation.state == "settled"
    assert usage(budget, 0) == [("minute", 200, 0.0, 1)]


def test_second_release_raises_reservation_error_and_changes_nothing(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE])
    reservation = budget.reserve(100, now=0)
    budget.record(5, now=0)
    reservation.release()

    with pytest.raises(ReservationError, match="already released"):
        reservation.release()

    assert usage(budget, 0) == [("minute", 5, 0.0, 1)]


def test_reservation_error_is_a_runtime_error() -> None:
    assert issubclass(ReservationError, RuntimeError)


# -- bad settle amounts --------------------------------------------------------


@pytest.mark.parametrize(
    ("tokens", "usd", "error", "names"),
    [
        (-1, 0, ValueError, "tokens"),
        (1.5, 0, TypeError, "tokens"),
        (True, 0, TypeError, "tokens"),
        ("10", 0, TypeError, "tokens"),
        (None, 0, TypeError, "tokens"),
        (2**62, 0, ValueError, "tokens"),
        (10, -0.25, ValueError, "usd"),
        (10, float("nan"), ValueError, "usd"),
        (10, float("inf"), ValueError, "usd"),
        (10, "ten", ValueError, "usd"),
        (10, [1], TypeError, "usd"),
    ],
    ids=[
        "negative-tokens",
        "float-tokens",
        "bool-tokens",
        "str-tokens",
        "none-tokens",
        "tokens-2**62",
        "negative-usd",
        "nan-usd",
        "inf-usd",
        "non-numeric-str-usd",
        "list-usd",
    ],
)
def test_bad_settle_amount_raises_naming_the_argument_and_leaves_reservation_open(
    make_budget: BudgetFactory,
    tokens: object,
    usd: object,
    error: type[Exception],
    names: str,
) -> None:
    budget = make_budget([MINUTE])
    reservation = budget.reserve(100, "0.10", now=0)

    with pytest.raises(error, match=names):
        reservation.settle(tokens, usd)  # type: ignore[arg-type]

    assert reservation.state == "open"
    assert reservation.tokens == 100
    assert reservation.usd == 0.1
    assert usage(budget, 0) == [("minute", 100, 0.1, 1)]


def test_reservation_can_be_settled_after_a_bad_settle_amount(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE])
    reservation = budget.reserve(100, now=0)
    with pytest.raises(ValueError, match="tokens"):
        reservation.settle(-5)

    reservation.settle(60)

    assert reservation.state == "settled"
    assert usage(budget, 0) == [("minute", 60, 0.0, 1)]


# -- context manager -----------------------------------------------------------


def test_normal_exit_from_with_block_keeps_the_estimate(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE])

    with budget.reserve(100, "0.10", now=0) as reservation:
        pass

    assert reservation.state == "open"
    assert usage(budget, 0) == [("minute", 100, 0.1, 1)]


def test_normal_exit_from_with_block_keeps_what_was_settled(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE])

    with budget.reserve(100, now=0) as reservation:
        reservation.settle(42)

    assert reservation.state == "settled"
    assert usage(budget, 0) == [("minute", 42, 0.0, 1)]


def test_exception_inside_with_block_releases_then_propagates(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE, HOUR])
    budget.record(5, now=0)

    held: list[Reservation] = []
    seen: list[tuple[str, int, float, int]] = []

    def call_the_model() -> None:
        with budget.reserve(100, "0.10", now=0) as reservation:
            held.append(reservation)
            seen.append(usage(budget, 0)[0])
            raise ConnectionError("model unavailable")

    with pytest.raises(ConnectionError, match="model unavailable"):
        call_the_model()

    [reservation] = held
    assert seen == [("minute", 105, 0.1, 2)]
    assert reservation.state == "released"
    assert usage(budget, 0) == [("minute", 5, 0.0, 1), ("hour", 5, 0.0, 1)]


def test_exception_after_settle_inside_with_block_keeps_the_settled_amounts(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE])

    held: list[Reservation] = []

    def call_the_model() -> None:
        with budget.reserve(100, now=0) as reservation:
            held.append(reservation)
            reservation.settle(70)
            raise KeyError("parsing the answer failed")

    with pytest.raises(KeyError, match="parsing the answer failed"):
        call_the_model()

    [reservation] = held
    assert reservation.state == "settled"
    assert usage(budget, 0) == [("minute", 70, 0.0, 1)]


# -- threads -------------------------------------------------------------------


def test_settle_from_another_thread_than_the_one_that_reserved(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([MINUTE, HOUR])
    reservation = budget.reserve(100, "0.10", now=0)
    errors: list[BaseException] = []

    def settle() -> None:
        try:
            reservation.settle(333, "0.33")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=settle)
    thread.start()
    thread.join(timeout=10)

    assert not thread.is_alive()
    assert errors == []
    assert reservation.state == "settled"
    assert usage(budget, 1) == [("minute", 333, 0.33, 1), ("hour", 333, 0.33, 1)]


def test_racing_settle_and_release_from_two_threads_exactly_one_wins(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("uncapped", 3600)])
    rounds = 200
    reservations = [budget.reserve(10, now=0) for _ in range(rounds)]
    outcomes: dict[str, list[str]] = {"settle": [], "release": []}
    start = threading.Barrier(2)

    def run(action: str) -> None:
        start.wait()
        for reservation in reservations:
            try:
                if action == "settle":
                    reservation.settle(3)
                else:
                    reservation.release()
                outcomes[action].append("won")
            except ReservationError:
                outcomes[action].append("lost")

    threads = [threading.Thread(target=run, args=(a,)) for a in outcomes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    settled = sum(r.state == "settled" for r in reservations)
    released = sum(r.state == "released" for r in reservations)
    assert settled + released == rounds
    assert outcomes["settle"].count("won") == settled
    assert outcomes["release"].count("won") == released
    assert usage(budget, 0) == [("uncapped", 3 * settled, 0.0, settled)]


def test_many_threads_reserving_and_settling_keep_exact_sums(
    make_budget: BudgetFactory,
) -> None:
    budget = make_budget([Window("minute", 60), Window("hour", 3600)])
    threads_count, rounds = 4, 500

    def work(offset: int) -> None:
        for i in range(rounds):
            reservation = budget.reserve(100, "0.01")
            if i % 3 == 0:
                reservation.release()
            else:
                reservation.settle(offset + i % 7, "0.002")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    settled_per_thread = [i for i in range(rounds) if i % 3 != 0]
    tokens = sum(
        offset + i % 7 for offset in range(threads_count) for i in settled_per_thread
    )
    requests = threads_count * len(settled_per_thread)
    snapshots = budget.snapshot()
    assert [(s.tokens_used, s.requests_used) for s in snapshots] == [
        (tokens, requests),
        (tokens, requests),
    ]
    # 0.002 USD is exactly 2,000,000 nano-dollars, so the sum is exact.
    assert [s.usd_used for s in snapshots] == [requests * 2_000_000 / 1e9] * 2
