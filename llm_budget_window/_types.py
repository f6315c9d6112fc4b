"""The user-facing types and the rules for validating and converting amounts.

Every engine (the compiled core, the pure-Python twin, the Redis backend)
accepts and returns exactly what is defined here, so they cannot disagree on
what is valid input or on how a breach or a snapshot reads.

Internally all amounts are integers: nanoseconds, tokens, nano-dollars
(1e-9 USD) and request counts.
"""

from __future__ import annotations

import datetime
import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Union

__all__ = [
    "FLOAT_EXACT_BILLIONTHS",
    "MAX_AMOUNT",
    "MAX_NANOS",
    "NANOS_PER_UNIT",
    "Axis",
    "Breach",
    "Number",
    "Window",
    "WindowBreached",
    "WindowSnapshot",
]

#: Real numbers accepted for USD amounts, seconds and caps.
Number = Union[int, float, Decimal, Fraction, str]  # noqa: UP007 (a runtime alias on 3.10)

#: Nanoseconds per second, and nano-dollars per dollar.
NANOS_PER_UNIT = 1_000_000_000

#: Tokens and nano-dollars of one call must stay below this (2**62).
MAX_AMOUNT = 1 << 62

#: Timestamps, durations and caps in nanoseconds or nano-dollars stay below
#: this, so that ``now - duration`` and ``timestamp + duration`` fit an int64.
MAX_NANOS = 1 << 62

#: Caps in tokens or requests stay below this (the largest int64 + 1).
MAX_CAP = 1 << 63

_INFINITY = math.inf


class Axis(str, enum.Enum):
    """One of the quantities a window can cap."""

    TOKENS = "tokens"
    USD = "usd"
    REQUESTS = "requests"

    def __str__(self) -> str:
        return self.value


#: Axes in the order a breach is looked for within one window.
AXES = (Axis.TOKENS, Axis.USD, Axis.REQUESTS)


# ---------------------------------------------------------------------------
# Conversions. Each raises TypeError or ValueError naming the argument and its
# value, and returns an int.


def _exact(value: object, name: str) -> Fraction | int:
    """Return the exact value of a real number, or raise naming ``name``."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[return-value]
    if kind is bool or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, not bool: {value!r}")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return Fraction(*value.as_integer_ratio())
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{name} must be a number, got {value!r}") from None
        return _exact_decimal(number, value, name)
    if isinstance(value, Decimal):
        return _exact_decimal(value, value, name)
    if isinstance(value, Fraction):
        return value
    raise TypeError(
        f"{name} must be an int, float, Decimal or numeric str, "
        f"not {type(value).__name__}: {value!r}"
    )


#: Decimal exponents past which a value is surely out of range or surely
#: rounds to zero billionths (every accepted value is below 2**62 billionths,
#: about 4.6e9 units).
_LARGEST_ADJUSTED = 20
_SMALLEST_ADJUSTED = -20


def _exact_decimal(number: Decimal, value: object, name: str) -> Fraction | int:
    """Return a finite Decimal's exact value, or a stand-in of the same fate.

    The exponent is bounded first: ``Fraction(Decimal("1e999999999"))`` would
    build a number of a billion digits and hold the GIL for minutes. A value
    too large for the accounting becomes one that fails the same range check;
    a value too small to reach half a billionth becomes one that rounds to
    zero with the same sign.
    """
    if not number.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    if not number:
        return 0
    adjusted = number.adjusted()
    if adjusted > _LARGEST_ADJUSTED:
        beyond: int = 10**_LARGEST_ADJUSTED
        return -beyond if number.is_signed() else beyond
    if adjusted < _SMALLEST_ADJUSTED:
        return Fraction(-1 if number.is_signed() else 1, 10**-_SMALLEST_ADJUSTED)
    return Fraction(number)


def to_nanos(value: object, name: str, *, signed: bool = False) -> int:
    """Convert seconds or dollars to a whole count of billionths.

    Floats are taken at their exact binary value; every value is rounded
    half-to-even to a whole billionth. The result lies in ``[0, 2**62)``, or
    ``(-2**62, 2**62)`` when ``signed``.
    """
    exact = _exact(value, name)
    # The sign is judged before rounding: a tiny negative amount is an error,
    # not a zero.
    if exact < 0 and not signed:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    nanos = (
        exact * NANOS_PER_UNIT if type(exact) is int else round(exact * NANOS_PER_UNIT)
    )
    if not -MAX_NANOS < nanos < MAX_NANOS:
        raise ValueError(
            f"{name} is too large for the integer accounting "
            f"(at most {MAX_NANOS - 1} billionths), got {value!r}"
        )
    return nanos


def to_tokens(value: object, name: str = "tokens") -> int:
    """Validate a token count: an int (not bool), 0 <= value < 2**62."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"{name} must be an int, not {type(value).__name__}: {value!r}"
            )
        value = int(value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if value >= MAX_AMOUNT:
        raise ValueError(f"{name} must be < 2**62, got {value!r}")
    return value


def usd_to_nanos(usd: object) -> int:
    """Convert a USD amount to nano-dollars, rounding half-to-even."""
    return to_nanos(usd, "usd")


def seconds_to_ns(seconds: object, name: str = "now") -> int:
    """Convert a point in time in seconds to integer nanoseconds."""
    return to_nanos(seconds, name, signed=True)


def nanos_to_usd(nanos: int) -> float:
    """Return nano-dollars as float dollars, converted once (exact for 0)."""
    return nanos / NANOS_PER_UNIT


#: Below 2**52 billionths (ns, nano-dollars), ``n / 1e9`` is within 2**-53
#: relative of the exact quotient, so less than half a billionth away: the
#: exact conversion of that float gives back ``n``.
FLOAT_EXACT_BILLIONTHS = 1 << 52


def wait_to_seconds(ns: int) -> float:
    """Return a wait of ``ns`` nanoseconds as float seconds, never short of it.

    The smallest float whose exact value is at least ``ns`` ns once rounded
    to a whole nanosecond, so that a call made ``retry_after`` seconds later
    fits. Below 2**52 ns (about 52 days) that is the nearest float.
    """
    seconds = ns / NANOS_PER_UNIT
    if ns >= FLOAT_EXACT_BILLIONTHS and round(Fraction(seconds) * NANOS_PER_UNIT) < ns:
        seconds = math.nextafter(seconds, _INFINITY)
    return seconds


def ns_to_seconds(ns: int | float) -> float:
    """Return nanoseconds as float seconds; ``inf`` stays ``inf``."""
    return ns / NANOS_PER_UNIT


def _duration_ns(duration: object) -> int:
    if isinstance(duration, datetime.timedelta):
        ns = (
            duration.days * 86_400 + duration.seconds
        ) * NANOS_PER_UNIT + duration.microseconds * 1_000
    else:
        ns = to_nanos(duration, "duration", signed=True)
    if ns <= 0:
        raise ValueError(f"duration must be > 0, got {duration!r}")
    if ns >= MAX_NANOS:
        raise ValueError(f"duration must be shorter than 2**62 ns, got {duration!r}")
    return ns


def _count_cap(cap: object, name: str) -> int | None:
    if cap is None:
        return None
    if isinstance(cap, bool) or not isinstance(cap, int):
        raise TypeError(
            f"{name} must be an int or None, not {type(cap).__name__}: {cap!r}"
        )
    if cap < 0:
        raise ValueError(f"{name} must be >= 0, got {cap!r}")
    if cap >= MAX_CAP:
        raise ValueError(f"{name} must be < 2**63, got {cap!r}")
    return int(cap)


def _usd_cap_nanos(cap: object) -> int | None:
    if cap is None:
        return None
    return to_nanos(cap, "usd_cap")


# ---------------------------------------------------------------------------
# Windows.


class Window:
    """A rolling time window with optional caps on tokens, USD and requests.

    ``duration`` is in seconds (int, float, Decimal, numeric str) or a
    ``datetime.timedelta``; it is held as whole nanoseconds and read back as
    float seconds. ``usd_cap`` is held as whole nano-dollars. A window with no
    caps counts calls, tokens and USD without ever refusing one. Windows are
    immutable and hashable; the ``with_*`` methods return new windows.
    """

    __slots__ = (
        "_name",
        "_duration_ns",
        "_token_cap",
        "_usd_cap_nanos",
        "_request_cap",
    )

    _name: str
    _duration_ns: int
    _token_cap: int | None
    _usd_cap_nanos: int | None
    _request_cap: int | None

    def __init__(
        self,
        name: str,
        duration: Number | datetime.timedelta,
        *,
        token_cap: int | None = None,
        usd_cap: Number | None = None,
        request_cap: int | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}: {name!r}")
        if not name:
            raise ValueError("name must be a non-empty str, got ''")
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_duration_ns", _duration_ns(duration))
        object.__setattr__(self, "_token_cap", _count_cap(token_cap, "token_cap"))
        object.__setattr__(self, "_usd_cap_nanos", _usd_cap_nanos(usd_cap))
        object.__setattr__(self, "_request_cap", _count_cap(request_cap, "request_cap"))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Window is immutable; use with_*() to change {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Window is immutable; cannot delete {name}")

    def _replace(self, **changes: object) -> Window:
        fields: dict[str, object] = {
            "token_cap": self._token_cap,
            "usd_cap": None
            if self._usd_cap_nanos is None
            else Fraction(self._usd_cap_nanos, NANOS_PER_UNIT),
            "request_cap": self._request_cap,
        }
        fields.update(changes)
        return Window(self._name, Fraction(self._duration_ns, NANOS_PER_UNIT), **fields)  # type: ignore[arg-type]

    def with_token_cap(self, token_cap: int | None) -> Window:
        """Return a copy of this window capped at ``token_cap`` tokens."""
        return self._replace(token_cap=token_cap)

    def with_usd_cap(self, usd_cap: Number | None) -> Window:
        """Return a copy of this window capped at ``usd_cap`` dollars."""
        return self._replace(usd_cap=usd_cap)

    def with_request_cap(self, request_cap: int | None) -> Window:
        """Return a copy of this window capped at ``request_cap`` calls."""
        return self._replace(request_cap=request_cap)

    @property
    def name(self) -> str:
        """The window's name, unique within one budget."""
        return self._name

    @property
    def duration(self) -> float:
        """The window's length in seconds."""
        return ns_to_seconds(self._duration_ns)

    @property
    def duration_ns(self) -> int:
        """The window's length in nanoseconds."""
        return self._duration_ns

    @property
    def token_cap(self) -> int | None:
        """The most tokens the window holds, or None for no cap."""
        return self._token_cap

    @property
    def usd_cap(self) -> float | None:
        """The most dollars the window holds, or None for no cap."""
        return (
            None if self._usd_cap_nanos is None else nanos_to_usd(self._usd_cap_nanos)
        )

    @property
    def usd_cap_nanos(self) -> int | None:
        """The most nano-dollars the window holds, or None for no cap."""
        return self._usd_cap_nanos

    @property
    def request_cap(self) -> int | None:
        """The most calls the window holds, or None for no cap."""
        return self._request_cap

    def _key(self) -> tuple[object, ...]:
        return (
            self._name,
            self._duration_ns,
            self._token_cap,
            self._usd_cap_nanos,
            self._request_cap,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        parts = [repr(self._name), f"duration={self.duration!r}"]
        if self._token_cap is not None:
            parts.append(f"token_cap={self._token_cap!r}")
        if self._usd_cap_nanos is not None:
            parts.append(f"usd_cap={self.usd_cap!r}")
        if self._request_cap is not None:
            parts.append(f"request_cap={self._request_cap!r}")
        return f"Window({', '.join(parts)})"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_window, self._key())


def _rebuild_window(
    name: str,
    duration_ns: int,
    token_cap: int | None,
    usd_cap_nanos: int | None,
    request_cap: int | None,
) -> Window:
    return Window(
        name,
        Fraction(duration_ns, NANOS_PER_UNIT),
        token_cap=token_cap,
        usd_cap=None
        if usd_cap_nanos is None
        else Fraction(usd_cap_nanos, NANOS_PER_UNIT),
        request_cap=request_cap,
    )


def validate_windows(windows: Iterable[Window]) -> tuple[Window, ...]:
    """Return the windows as a tuple, or raise if there are none or names repeat."""
    if isinstance(windows, Window):
        raise TypeError("windows must be an iterable of Window, not a single Window")
    try:
        result = tuple(windows)
    except TypeError:
        raise TypeError(
            f"windows must be an iterable of Window, not {type(windows).__name__}"
        ) from None
    if not result:
        raise ValueError("windows must hold at least one Window, got none")
    seen: set[str] = set()
    for window in result:
        if not isinstance(window, Window):
            raise TypeError(
                f"windows must hold only Window objects, not {type(window).__name__}: "
                f"{window!r}"
            )
        if window.name in seen:
            raise ValueError(f"windows must have unique names, {window.name!r} repeats")
        seen.add(window.name)
    return result


# ---------------------------------------------------------------------------
# Results.


@dataclass(frozen=True)
class Breach:
    """Why a request was refused: the first window and axis it did not fit.

    ``attempted`` is ``used + requested``, which exceeds ``cap``. Amounts are
    ints for tokens and requests and float dollars for USD. ``retry_after`` is
    the number of seconds until the whole request would fit every window if
    nothing else were recorded meanwhile (``math.inf`` if it never can).
    """

    __slots__ = (
        "window_name",
        "axis",
        "attempted",
        "cap",
        "used",
        "requested",
        "retry_after",
    )

    window_name: str
    axis: Axis
    attempted: int | float
    cap: int | float
    used: int | float
    requested: int | float
    retry_after: float

    def __reduce__(self) -> tuple[object, ...]:
        # A frozen dataclass with __slots__ cannot restore its state by
        # assignment, so it is rebuilt from its fields.
        return (type(self), tuple(getattr(self, f) for f in self.__slots__))


def make_breach(
    window: Window, axis_index: int, used: int, requested: int, retry_after_ns: int
) -> Breach:
    """Build a Breach from an engine's integer result.

    ``axis_index`` is 0, 1 or 2 for tokens, USD and requests; ``used`` and
    ``requested`` are integers in the axis's unit; ``retry_after_ns`` is the
    wait in nanoseconds, or -1 for never.
    """
    axis = AXES[axis_index]
    retry = _INFINITY if retry_after_ns < 0 else wait_to_seconds(retry_after_ns)
    if axis is Axis.USD:
        cap_nanos = window._usd_cap_nanos
        assert cap_nanos is not None
        return Breach(
            window._name,
            axis,
            nanos_to_usd(used + requested),
            nanos_to_usd(cap_nanos),
            nanos_to_usd(used),
            nanos_to_usd(requested),
            retry,
        )
    cap = window._token_cap if axis is Axis.TOKENS else window._request_cap
    assert cap is not None
    return Breach(window._name, axis, used + requested, cap, used, requested, retry)


class WindowBreached(Exception):
    """Raised by ``record`` when a request does not fit; carries the Breach."""

    breach: Breach

    def __init__(self, breach: Breach) -> None:
        super().__init__(breach)
        self.breach = breach

    def __str__(self) -> str:
        b = self.breach
        return (
            f"window {b.window_name!r} would exceed its {b.axis.value} cap: "
            f"attempted {b.attempted!r} > cap {b.cap!r} "
            f"(used {b.used!r} + requested {b.requested!r}); "
            f"retry after {b.retry_after!r} s"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.breach,))

    @property
    def window_name(self) -> str:
        return self.breach.window_name

    @property
    def axis(self) -> Axis:
        return self.breach.axis

    @property
    def attempted(self) -> int | float:
        return self.breach.attempted

    @property
    def cap(self) -> int | float:
        return self.breach.cap

    @property
    def used(self) -> int | float:
        return self.breach.used

    @property
    def requested(self) -> int | float:
        return self.breach.requested

    @property
    def retry_after(self) -> float:
        return self.breach.retry_after


@dataclass(frozen=True)
class WindowSnapshot:
    """One window's use at one moment.

    ``usd_used`` is float dollars; the ``*_remaining`` fields are the headroom
    left under each cap (never negative), or None where the axis is uncapped.
    ``entry_count`` is the number of calls the window holds.
    """

    __slots__ = (
        "name",
        "duration",
        "tokens_used",
        "usd_used",
        "requests_used",
        "token_cap",
        "usd_cap",
        "request_cap",
        "entry_count",
        "tokens_remaining",
        "usd_remaining",
        "requests_remaining",
    )

    name: str
    duration: float
    tokens_used: int
    usd_used: float
    requests_used: int
    token_cap: int | None
    usd_cap: float | None
    request_cap: int | None
    entry_count: int
    tokens_remaining: int | None
    usd_remaining: float | None
    requests_remaining: int | None

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), tuple(getattr(self, f) for f in self.__slots__))


def make_snapshot(
    window: Window, tokens: int, nanos: int, requests: int
) -> WindowSnapshot:
    """Build a WindowSnapshot from an engine's integer sums."""
    token_cap = window._token_cap
    nanos_cap = window._usd_cap_nanos
    request_cap = window._request_cap
    return WindowSnapshot(
        window._name,
        ns_to_seconds(window._duration_ns),
        tokens,
        nanos_to_usd(nanos),
        requests,
        token_cap,
        None if nanos_cap is None else nanos_to_usd(nanos_cap),
        request_cap,
        requests,
        None if token_cap is None else max(token_cap - tokens, 0),
        None if nanos_cap is None else nanos_to_usd(max(nanos_cap - nanos, 0)),
        None if request_cap is None else max(request_cap - requests, 0),
    )


def overflow_error(window: Window, axis_index: int) -> OverflowError:
    """Return the error for a sum that no longer fits the integer accounting."""
    return OverflowError(
        f"window {window.name!r}: the {AXES[axis_index].value} sum would exceed "
        "2**63 - 1 units; the request was not recorded"
    )


def resolve_now(clock: object, now: object) -> int:
    """Return the time of a call in nanoseconds from ``now`` or ``clock``.

    ``clock`` is None (monotonic clock) or a callable returning seconds.
    """
    if now is not None:
        return seconds_to_ns(now, "now")
    if clock is None:
        import time

        return time.monotonic_ns()
    return seconds_to_ns(clock(), "clock()")  # type: ignore[operator]
