"""The Window type: construction, exposure, immutability, equality, copies."""

from __future__ import annotations

import datetime
import pickle
from decimal import Decimal
from fractions import Fraction

import pytest

from llm_budget_window import Window


def test_window_exposes_name_duration_and_caps() -> None:
    window = Window("minute", 60, token_cap=50_000, usd_cap=1, request_cap=100)

    assert window.name == "minute"
    assert window.duration == 60.0
    assert window.duration_ns == 60_000_000_000
    assert window.token_cap == 50_000
    assert window.usd_cap == 1.0
    assert window.usd_cap_nanos == 1_000_000_000
    assert window.request_cap == 100


def test_window_without_caps_exposes_none_for_every_cap() -> None:
    window = Window("count", 1)

    assert window.token_cap is None
    assert window.usd_cap is None
    assert window.usd_cap_nanos is None
    assert window.request_cap is None


def test_duration_reads_float_seconds_and_duration_ns_exact_integer() -> None:
    window = Window("w", 1.5)

    assert type(window.duration) is float
    assert window.duration == 1.5
    assert type(window.duration_ns) is int
    assert window.duration_ns == 1_500_000_000


@pytest.mark.parametrize(
    ("duration", "expected_ns"),
    [
        (datetime.timedelta(minutes=1), 60_000_000_000),
        (datetime.timedelta(days=1, seconds=1), 86_401_000_000_000),
        (datetime.timedelta(microseconds=1), 1_000),
        (datetime.timedelta(hours=-1, minutes=61), 60_000_000_000),
    ],
    ids=["one-minute", "day-and-a-second", "one-microsecond", "normalized-sum"],
)
def test_timedelta_duration_converts_exactly(
    duration: datetime.timedelta, expected_ns: int
) -> None:
    window = Window("w", duration)

    assert window.duration_ns == expected_ns
    assert window.duration == expected_ns / 10**9


@pytest.mark.parametrize(
    ("duration", "expected_ns"),
    [
        (1, 1_000_000_000),
        (0.1, 100_000_000),
        (Decimal("0.000000001"), 1),
        ("2.5", 2_500_000_000),
        (Fraction(1, 3), 333_333_333),
        # Ties round half-to-even: 1/1024 s is 976562.5 ns.
        (1 / 1024, 976_562),
        (3 / 1024, 2_929_688),
    ],
    ids=["int", "float", "decimal-1ns", "str", "fraction", "tie-down", "tie-up"],
)
def test_numeric_duration_converts_to_whole_nanoseconds_half_to_even(
    duration: object, expected_ns: int
) -> None:
    assert Window("w", duration).duration_ns == expected_ns  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("usd_cap", "expected_nanos", "expected_usd"),
    [
        (0.1, 100_000_000, 0.1),
        (Decimal("0.30"), 300_000_000, 0.3),
        ("12.5", 12_500_000_000, 12.5),
        (0, 0, 0.0),
        (Decimal("1.2345678905"), 1_234_567_890, 1.23456789),
        (Decimal("1.2345678915"), 1_234_567_892, 1.234567892),
    ],
    ids=["float", "decimal", "str", "zero", "tie-down", "tie-up"],
)
def test_usd_cap_exposed_as_float_dollars_and_exact_nanos(
    usd_cap: object, expected_nanos: int, expected_usd: float
) -> None:
    window = Window("w", 1, usd_cap=usd_cap)  # type: ignore[arg-type]

    assert window.usd_cap_nanos == expected_nanos
    assert type(window.usd_cap) is float
    assert window.usd_cap == expected_usd


def test_int_subclass_caps_are_stored_as_plain_int() -> None:
    class Count(int):
        pass

    window = Window("w", 1, token_cap=Count(7), request_cap=Count(3))

    assert type(window.token_cap) is int
    assert window.token_cap == 7
    assert type(window.request_cap) is int
    assert window.request_cap == 3


def test_setting_an_attribute_raises_attribute_error() -> None:
    window = Window("w", 1, token_cap=5)

    with pytest.raises(AttributeError, match="immutable"):
        window.token_cap = 6  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        window._token_cap = 6  # type: ignore[misc]
    with pytest.raises(AttributeError):
        window.extra = 1  # type: ignore[attr-defined]

    assert window.token_cap == 5


def test_deleting_an_attribute_raises_attribute_error() -> None:
    window = Window("w", 1, token_cap=5)

    with pytest.raises(AttributeError, match="immutable"):
        del window._token_cap  # type: ignore[attr-defined]

    assert window.token_cap == 5


def test_windows_with_equal_values_are_equal_and_hash_alike() -> None:
    a = Window("minute", 60, token_cap=10, usd_cap=0.1, request_cap=2)
    b = Window(
        "minute",
        datetime.timedelta(minutes=1),
        token_cap=10,
        usd_cap=Decimal("0.1"),
        request_cap=2,
    )

    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert {a: "x"}[b] == "x"


@pytest.mark.parametrize(
    "other",
    [
        Window("hour", 60, token_cap=10),
        Window("minute", 61, token_cap=10),
        Window("minute", 60, token_cap=11),
        Window("minute", 60),
        Window("minute", 60, token_cap=10, usd_cap=0),
        Window("minute", 60, token_cap=10, request_cap=10),
    ],
    ids=["name", "duration", "token-cap", "no-cap", "usd-cap", "request-cap"],
)
def test_windows_differing_in_any_field_are_unequal(other: Window) -> None:
    assert Window("minute", 60, token_cap=10) != other


def test_window_is_not_equal_to_other_types() -> None:
    window = Window("w", 1)

    assert window != "w"
    assert window != ("w", 1_000_000_000, None, None, None)
    assert window.__eq__(object()) is NotImplemented


def test_repr_shows_name_duration_and_only_the_set_caps() -> None:
    assert repr(Window("w", 1)) == "Window('w', duration=1.0)"
    assert (
        repr(Window("minute", 60, token_cap=50_000, usd_cap=1, request_cap=9))
        == "Window('minute', duration=60.0, token_cap=50000, usd_cap=1.0, "
        "request_cap=9)"
    )
    assert (
        repr(Window("d", 0.5, usd_cap=0.25))
        == "Window('d', duration=0.5, usd_cap=0.25)"
    )


def test_repr_evaluates_back_to_an_equal_window() -> None:
    window = Window("minute", 60, token_cap=50_000, usd_cap=0.3, request_cap=9)

    assert eval(repr(window), {"Window": Window}) == window


def test_with_token_cap_returns_a_new_window_and_leaves_the_original() -> None:
    original = Window("w", 10, usd_cap=1, request_cap=3)

    changed = original.with_token_cap(500)

    assert changed is not original
    assert changed == Window("w", 10, token_cap=500, usd_cap=1, request_cap=3)
    assert original.token_cap is None


def test_with_usd_cap_returns_a_new_window_and_leaves_the_original() -> None:
    original = Window("w", 10, token_cap=5, usd_cap=1, request_cap=3)

    changed = original.with_usd_cap(Decimal("0.25"))

    assert changed == Window("w", 10, token_cap=5, usd_cap=0.25, request_cap=3)
    assert changed.usd_cap_nanos == 250_000_000
    assert original.usd_cap == 1.0


def test_with_request_cap_returns_a_new_window_and_leaves_the_original() -> None:
    original = Window("w", 10, token_cap=5)

    changed = original.with_request_cap(0)

    assert changed == Window("w", 10, token_cap=5, request_cap=0)
    assert original.request_cap is None


def test_with_cap_none_removes_that_cap_only() -> None:
    window = Window("w", 10, token_cap=5, usd_cap=1, request_cap=3)

    assert window.with_token_cap(None) == Window("w", 10, usd_cap=1, request_cap=3)
    assert window.with_usd_cap(None) == Window("w", 10, token_cap=5, request_cap=3)
    assert window.with_request_cap(None) == Window("w", 10, token_cap=5, usd_cap=1)


def test_with_methods_keep_an_odd_duration_and_usd_cap_exact() -> None:
    window = Window("w", Decimal("0.000000007"), usd_cap=Decimal("0.000000003"))

    changed = window.with_token_cap(1).with_request_cap(2)

    assert changed.duration_ns == 7
    assert changed.usd_cap_nanos == 3


def test_with_methods_chain() -> None:
    window = Window("w", 60).with_token_cap(1).with_usd_cap(2).with_request_cap(3)

    assert window == Window("w", 60, token_cap=1, usd_cap=2, request_cap=3)


def test_window_survives_a_pickle_round_trip() -> None:
    window = Window("minute", Decimal("60.000000001"), token_cap=10, usd_cap="0.1")

    copy = pickle.loads(pickle.dumps(window))

    assert copy == window
    assert copy.duration_ns == 60_000_000_001
    assert copy.usd_cap_nanos == 100_000_000
