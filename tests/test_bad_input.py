"""Bad input gets a TypeError or ValueError naming the argument and the value,
and changes nothing."""

from __future__ import annotations

import datetime
import math
import re
from decimal import Decimal
from typing import Any

import pytest

from llm_budget_window import Window
from tests.conftest import BudgetFactory, ManualClock

NAN = math.nan
INF = math.inf

BAD_TOKENS = [
    pytest.param(-1, ValueError, id="negative"),
    pytest.param(-(2**100), ValueError, id="huge-negative"),
    pytest.param(2**62, ValueError, id="2**62"),
    pytest.param(2**100, ValueError, id="huge"),
    pytest.param(True, TypeError, id="bool-true"),
    pytest.param(False, TypeError, id="bool-false"),
    pytest.param(1.0, TypeError, id="whole-float"),
    pytest.param(1.5, TypeError, id="float"),
    pytest.param(NAN, TypeError, id="nan"),
    pytest.param(INF, TypeError, id="inf"),
    pytest.param("1", TypeError, id="str"),
    pytest.param(Decimal(1), TypeError, id="decimal"),
    pytest.param(None, TypeError, id="none"),
]

BAD_USD = [
    pytest.param(-1, ValueError, id="negative-int"),
    pytest.param(-0.01, ValueError, id="negative-float"),
    pytest.param(Decimal("-0.5"), ValueError, id="negative-decimal"),
    pytest.param("-2", ValueError, id="negative-str"),
    # Negative amounts below half a nano-dollar are still negative.
    pytest.param(-1e-10, ValueError, id="tiny-negative-float"),
    pytest.param(Decimal("-0.0000000001"), ValueError, id="tiny-negative-decimal"),
    pytest.param(NAN, ValueError, id="nan"),
    pytest.param(INF, ValueError, id="inf"),
    pytest.param(-INF, ValueError, id="minus-inf"),
    pytest.param(Decimal("NaN"), ValueError, id="decimal-nan"),
    pytest.param(Decimal("sNaN"), ValueError, id="decimal-snan"),
    pytest.param(Decimal("Infinity"), ValueError, id="decimal-inf"),
    pytest.param("nan", ValueError, id="str-nan"),
    pytest.param("inf", ValueError, id="str-inf"),
    pytest.param("ten cents", ValueError, id="str-not-a-number"),
    pytest.param("", ValueError, id="str-empty"),
    pytest.param(4_611_686_019, ValueError, id="too-large-int"),
    pytest.param(2**64, ValueError, id="huge-int"),
    pytest.param(5e9, ValueError, id="too-large-float"),
    pytest.param(Decimal("4611686018.427387904"), ValueError, id="2**62-nanos"),
    # Short strings with huge exponents are refused without building the
    # huge number they name.
    pytest.param("1e999999999", ValueError, id="str-huge-exponent"),
    pytest.param(Decimal("1e999999999"), ValueError, id="decimal-huge-exponent"),
    pytest.param("-1e-999999999", ValueError, id="str-tiny-negative-exponent"),
    pytest.param(True, TypeError, id="bool"),
    pytest.param(None, TypeError, id="none"),
    pytest.param([], TypeError, id="list"),
    pytest.param(1j, TypeError, id="complex"),
]

BAD_NOW = [
    pytest.param(NAN, ValueError, id="nan"),
    pytest.param(INF, ValueError, id="inf"),
    pytest.param(-INF, ValueError, id="minus-inf"),
    pytest.param(Decimal("NaN"), ValueError, id="decimal-nan"),
    pytest.param("noon", ValueError, id="str-not-a-number"),
    pytest.param(4_611_686_019, ValueError, id="too-late"),
    pytest.param(-4_611_686_019, ValueError, id="too-early"),
    pytest.param(1e300, ValueError, id="huge-float"),
    pytest.param("1e999999999", ValueError, id="str-huge-exponent"),
    pytest.param("-1e999999999", ValueError, id="str-huge-negative-exponent"),
    pytest.param(True, TypeError, id="bool"),
    pytest.param([], TypeError, id="list"),
    pytest.param(datetime.datetime(2024, 1, 1), TypeError, id="datetime"),
]

AMOUNT_METHODS = ["record", "try_record", "check", "retry_after"]


def message_names(exc: BaseException, argument: str, value: object) -> bool:
    """Whether the message names the argument (as a word) and shows the value."""
    message = str(exc)
    return bool(re.search(rf"(?<!\w){re.escape(argument)}(?!\w)", message)) and (
        repr(value) in message
    )


@pytest.fixture
def used_budget(make_budget: BudgetFactory) -> Any:
    """A budget holding one call at t=0, last touched at t=5."""
    budget = make_budget(
        [Window("a", 10, token_cap=100, usd_cap=1, request_cap=5), Window("b", 60)]
    )
    budget.record(10, usd=0.1, now=0)
    budget.snapshot(now=5)
    return budget


def assert_unchanged(budget: Any) -> None:
    # Had the failed call advanced the budget's time to 15, the record at t=0
    # would have left window "a".
    a, b = budget.snapshot(now=5)
    assert (a.tokens_used, a.usd_used, a.requests_used) == (10, 0.1, 1)
    assert (b.tokens_used, b.usd_used, b.requests_used) == (10, 0.1, 1)
    assert budget.try_record(90, usd=0.9, now=5) is None


@pytest.mark.parametrize("method", AMOUNT_METHODS)
@pytest.mark.parametrize(("tokens", "error"), BAD_TOKENS)
def test_bad_tokens_raise_naming_tokens_and_change_nothing(
    used_budget: Any, method: str, tokens: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        getattr(used_budget, method)(tokens, usd=0, now=15)

    assert type(caught.value) is error
    assert message_names(caught.value, "tokens", tokens), str(caught.value)
    assert_unchanged(used_budget)


@pytest.mark.parametrize("method", AMOUNT_METHODS)
@pytest.mark.parametrize(("usd", "error"), BAD_USD)
def test_bad_usd_raises_naming_usd_and_changes_nothing(
    used_budget: Any, method: str, usd: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        getattr(used_budget, method)(0, usd=usd, now=15)

    assert type(caught.value) is error
    assert message_names(caught.value, "usd", usd), str(caught.value)
    assert_unchanged(used_budget)


@pytest.mark.parametrize("method", [*AMOUNT_METHODS, "snapshot"])
@pytest.mark.parametrize(("now", "error"), BAD_NOW)
def test_bad_now_raises_naming_now_and_changes_nothing(
    used_budget: Any, method: str, now: object, error: type[Exception]
) -> None:
    args = () if method == "snapshot" else (0,)

    with pytest.raises(error) as caught:
        getattr(used_budget, method)(*args, now=now)

    assert type(caught.value) is error
    assert message_names(caught.value, "now", now), str(caught.value)
    assert_unchanged(used_budget)


@pytest.mark.parametrize("method", [*AMOUNT_METHODS, "snapshot"])
@pytest.mark.parametrize(
    ("reading", "error"),
    [
        pytest.param(NAN, ValueError, id="nan"),
        pytest.param(INF, ValueError, id="inf"),
        pytest.param("noon", ValueError, id="str-not-a-number"),
        pytest.param(None, TypeError, id="none"),
        pytest.param(True, TypeError, id="bool"),
    ],
)
def test_bad_clock_reading_raises_naming_the_clock_and_changes_nothing(
    make_budget: BudgetFactory, method: str, reading: object, error: type[Exception]
) -> None:
    clock = ManualClock(0)
    budget = make_budget([Window("a", 10, token_cap=100)], clock=clock)
    budget.record(10)
    clock.value = reading  # type: ignore[assignment]

    args = () if method == "snapshot" else (0,)

    with pytest.raises(error) as caught:
        getattr(budget, method)(*args)

    assert type(caught.value) is error
    assert message_names(caught.value, "clock()", reading), str(caught.value)
    [snap] = budget.snapshot(now=9)
    assert (snap.tokens_used, snap.requests_used) == (10, 1)


def test_largest_token_count_is_accepted(make_budget: BudgetFactory) -> None:
    budget = make_budget([Window("w", 60)])

    budget.record(2**62 - 1, now=0)

    assert budget.snapshot(now=0)[0].tokens_used == 2**62 - 1


def test_int_subclass_tokens_are_accepted(make_budget: BudgetFactory) -> None:
    class Count(int):
        pass

    budget = make_budget([Window("w", 60, token_cap=10)])

    budget.record(Count(7), now=0)

    assert budget.snapshot(now=0)[0].tokens_used == 7


# -- windows given to BudgetWindows ----------------------------------------------


@pytest.mark.parametrize(
    ("windows", "error", "shows"),
    [
        pytest.param([], ValueError, "none", id="empty-list"),
        pytest.param((), ValueError, "none", id="empty-tuple"),
        pytest.param(iter([]), ValueError, "none", id="empty-iterator"),
        pytest.param(
            [Window("a", 1), Window("a", 2, token_cap=1)],
            ValueError,
            "'a'",
            id="duplicate-names",
        ),
        pytest.param(["minute"], TypeError, "'minute'", id="str-item"),
        pytest.param([Window("a", 1), None], TypeError, "None", id="none-item"),
        pytest.param([("a", 60)], TypeError, "('a', 60)", id="tuple-item"),
        pytest.param(Window("a", 1), TypeError, "Window", id="single-window"),
        pytest.param(None, TypeError, "NoneType", id="none"),
        pytest.param(60, TypeError, "int", id="int"),
    ],
)
def test_bad_windows_raise_naming_windows(
    make_budget: BudgetFactory, windows: object, error: type[Exception], shows: str
) -> None:
    with pytest.raises(error) as caught:
        make_budget(windows)  # type: ignore[arg-type]

    assert type(caught.value) is error
    assert re.search(r"\bwindows\b", str(caught.value)), str(caught.value)
    assert shows in str(caught.value)


@pytest.mark.parametrize("clock", ["monotonic", 5], ids=["str", "int"])
def test_uncallable_clock_raises_type_error_naming_clock(
    make_budget: BudgetFactory, clock: object
) -> None:
    with pytest.raises(TypeError, match=r"\bclock\b"):
        make_budget([Window("w", 1)], clock=clock)  # type: ignore[arg-type]


# -- Window --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "error"),
    [
        pytest.param("", ValueError, id="empty"),
        pytest.param(None, TypeError, id="none"),
        pytest.param(5, TypeError, id="int"),
        pytest.param(b"minute", TypeError, id="bytes"),
    ],
)
def test_bad_window_name_raises_naming_name(
    name: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        Window(name, 60)  # type: ignore[arg-type]

    assert type(caught.value) is error
    assert message_names(caught.value, "name", name), str(caught.value)


@pytest.mark.parametrize(
    ("duration", "error"),
    [
        pytest.param(0, ValueError, id="zero"),
        pytest.param(0.0, ValueError, id="zero-float"),
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(-0.5, ValueError, id="negative-float"),
        pytest.param(Decimal("-1"), ValueError, id="negative-decimal"),
        pytest.param(NAN, ValueError, id="nan"),
        pytest.param(INF, ValueError, id="inf"),
        pytest.param(-INF, ValueError, id="minus-inf"),
        pytest.param(Decimal("Infinity"), ValueError, id="decimal-inf"),
        pytest.param("an hour", ValueError, id="str-not-a-number"),
        pytest.param(2**62, ValueError, id="too-long"),
        pytest.param(datetime.timedelta(0), ValueError, id="timedelta-zero"),
        pytest.param(
            datetime.timedelta(seconds=-1), ValueError, id="timedelta-negative"
        ),
        pytest.param(
            datetime.timedelta(days=999_999_999), ValueError, id="timedelta-long"
        ),
        pytest.param(None, TypeError, id="none"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param([60], TypeError, id="list"),
    ],
)
def test_bad_duration_raises_naming_duration(
    duration: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        Window("w", duration)  # type: ignore[arg-type]

    assert type(caught.value) is error
    assert message_names(caught.value, "duration", duration), str(caught.value)


@pytest.mark.parametrize("argument", ["token_cap", "request_cap"])
@pytest.mark.parametrize(
    ("cap", "error"),
    [
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(2**63, ValueError, id="2**63"),
        pytest.param(1.5, TypeError, id="float"),
        pytest.param(10.0, TypeError, id="whole-float"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param("10", TypeError, id="str"),
        pytest.param(Decimal(10), TypeError, id="decimal"),
    ],
)
def test_bad_count_cap_raises_naming_the_cap(
    argument: str, cap: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        Window("w", 60, **{argument: cap})

    assert type(caught.value) is error
    assert message_names(caught.value, argument, cap), str(caught.value)


@pytest.mark.parametrize(
    ("cap", "error"),
    [
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(-0.01, ValueError, id="negative-float"),
        pytest.param(-1e-10, ValueError, id="tiny-negative-float"),
        pytest.param(NAN, ValueError, id="nan"),
        pytest.param(INF, ValueError, id="inf"),
        pytest.param(Decimal("NaN"), ValueError, id="decimal-nan"),
        pytest.param("a dollar", ValueError, id="str-not-a-number"),
        pytest.param(Decimal("4611686018.427387904"), ValueError, id="2**62-nanos"),
        # Short strings with huge exponents are refused without building the
        # huge number they name.
        pytest.param("1e999999999", ValueError, id="str-huge-exponent"),
        pytest.param(Decimal("1e999999999"), ValueError, id="decimal-huge-exponent"),
        pytest.param("-1e-999999999", ValueError, id="str-tiny-negative-exponent"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param([1], TypeError, id="list"),
    ],
)
def test_bad_usd_cap_raises_naming_usd_cap(cap: object, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        Window("w", 60, usd_cap=cap)  # type: ignore[arg-type]

    assert type(caught.value) is error
    assert message_names(caught.value, "usd_cap", cap), str(caught.value)


@pytest.mark.parametrize(
    ("method", "argument", "value", "error"),
    [
        ("with_token_cap", "token_cap", -1, ValueError),
        ("with_token_cap", "token_cap", 0.5, TypeError),
        ("with_usd_cap", "usd_cap", NAN, ValueError),
        ("with_usd_cap", "usd_cap", -2, ValueError),
        ("with_request_cap", "request_cap", -1, ValueError),
        ("with_request_cap", "request_cap", "3", TypeError),
    ],
)
def test_bad_with_cap_raises_and_leaves_the_window_unchanged(
    method: str, argument: str, value: object, error: type[Exception]
) -> None:
    window = Window("w", 60, token_cap=1, usd_cap=2, request_cap=3)

    with pytest.raises(error) as caught:
        getattr(window, method)(value)

    assert message_names(caught.value, argument, value), str(caught.value)
    assert window == Window("w", 60, token_cap=1, usd_cap=2, request_cap=3)
