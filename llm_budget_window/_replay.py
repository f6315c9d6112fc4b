"""Replay a usage log through a budget and report what it would have done.

The replay is a client of the public API only: it feeds each call of the log,
in file order, to ``try_record`` at the log's own time, and reads the use of
every window with ``snapshot`` after each admitted call (the only moments
when use can rise, so the peaks are exact).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Protocol

from ._replay_input import Prices, UsageLog
from ._types import (
    AXES,
    FLOAT_EXACT_BILLIONTHS,
    NANOS_PER_UNIT,
    Axis,
    Breach,
    Number,
    Window,
    WindowSnapshot,
)

__all__ = [
    "REPORT_FORMAT_VERSION",
    "AxisPeak",
    "Budget",
    "ReplayReport",
    "SpecError",
    "Timeline",
    "WindowReport",
    "parse_prices",
    "parse_window",
    "render_json",
    "render_text",
    "replay",
    "report_dict",
]

#: Bumped whenever a field of the JSON report changes meaning or goes away.
REPORT_FORMAT_VERSION = 1

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)([A-Za-z]*)")
_PRICE_NAMES = ("input", "output", "tokens")


class SpecError(ValueError):
    """A --window or --price value cannot be understood; the message is one line."""


# ---------------------------------------------------------------------------
# Command-line specs.


def parse_window(spec: str) -> Window:
    """Return the Window of a spec such as ``1m:tokens=50000,usd=1``.

    The duration is a number and a unit (s, m, h or d) and also names the
    window; the caps are ``tokens``, ``usd`` and ``requests``, each at most
    once. A spec with no caps counts without refusing. Raises SpecError.
    """
    duration_text, has_caps, caps_text = spec.strip().partition(":")
    match = _DURATION.fullmatch(duration_text)
    if match is None:
        raise SpecError(
            f"{spec!r}: expected DURATION[:AXIS=CAP,...] with a duration such as "
            "30s, 1m, 1.5h or 7d"
        )
    amount, unit = match.groups()
    if unit not in _UNIT_SECONDS:
        problem = f"unknown unit {unit!r}" if unit else "no unit"
        raise SpecError(f"{spec!r}: {problem} in {duration_text!r} (use s, m, h or d)")
    seconds = Fraction(amount) * _UNIT_SECONDS[unit]
    if seconds <= 0:
        raise SpecError(f"{spec!r}: the duration must be > 0")

    caps: dict[str, int | Decimal] = {}
    for item in caps_text.split(",") if has_caps else ():
        name, has_value, value = (part.strip() for part in item.partition("="))
        if not has_value or not name:
            raise SpecError(f"{spec!r}: expected AXIS=CAP, got {item.strip()!r}")
        if name not in Axis._value2member_map_:
            raise SpecError(
                f"{spec!r}: unknown axis {name!r} (use tokens, usd or requests)"
            )
        if name in caps:
            raise SpecError(f"{spec!r}: the {name} cap is given twice")
        caps[name] = _cap_value(spec, name, value)

    try:
        return Window(
            duration_text,
            seconds,
            token_cap=caps.get("tokens"),  # type: ignore[arg-type]
            usd_cap=caps.get("usd"),
            request_cap=caps.get("requests"),  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise SpecError(f"{spec!r}: {exc}") from None


def _cap_value(spec: str, axis: str, text: str) -> int | Decimal:
    number = _decimal_or_none(text)
    if number is None:
        raise SpecError(f"{spec!r}: the {axis} cap must be a number, got {text!r}")
    if number < 0:
        raise SpecError(f"{spec!r}: the {axis} cap must be >= 0, got {text!r}")
    if axis == "usd":
        return number
    if number != number.to_integral_value():
        raise SpecError(
            f"{spec!r}: the {axis} cap must be a whole number, got {text!r}"
        )
    return int(number)


def parse_prices(spec: str) -> Prices:
    """Return the prices of a spec such as ``input=3,output=15``.

    Prices are USD per million tokens, exact: ``input`` and ``output`` price
    each side of a call, ``tokens`` every token. Raises SpecError.
    """
    prices: dict[str, Decimal] = {}
    for item in spec.split(","):
        name, has_value, value = (part.strip() for part in item.partition("="))
        if not has_value or not name:
            raise SpecError(f"{spec!r}: expected NAME=USD_PER_MILLION, got {item!r}")
        if name not in _PRICE_NAMES:
            raise SpecError(
                f"{spec!r}: unknown price {name!r} (use input, output or tokens)"
            )
        if name in prices:
            raise SpecError(f"{spec!r}: the {name} price is given twice")
        number = _decimal_or_none(value)
        if number is None or number < 0:
            raise SpecError(
                f"{spec!r}: the {name} price must be a number of USD per million "
                f"tokens >= 0, got {value!r}"
            )
        prices[name] = number
    return Prices(**prices)


def _decimal_or_none(text: str) -> Decimal | None:
    """Return a finite number, or None; sizes past 10**30 count as not numbers.

    The bound keeps ``1e999999999`` from becoming an integer of a billion
    digits; every cap and price the budget accepts is far smaller.
    """
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() and number.adjusted() <= 30 else None


# ---------------------------------------------------------------------------
# The replay.


class Budget(Protocol):
    """What the replay needs of an engine's BudgetWindows."""

    def try_record(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> Breach | None: ...

    def snapshot(self, *, now: Number | None = None) -> list[WindowSnapshot]: ...


@dataclass
class AxisPeak:
    """The highest use of one axis of one window, against its cap.

    ``peak`` is tokens or calls (int) or float dollars; ``reached_at`` is the
    index of the call that first brought the window to its peak (None when
    nothing was admitted). ``rejected_calls`` counts the calls refused on this
    axis of this window.
    """

    axis: Axis
    cap: int | float | None
    peak: int | float = 0
    reached_at: int | None = None
    rejected_calls: int = 0


@dataclass
class WindowReport:
    """What one window did: its peaks and the calls it refused.

    A refused call is counted against the window its Breach names: the first
    window, in declaration order, that it did not fit. Call fields are indices
    into the log.
    """

    window: Window
    peaks: list[AxisPeak]
    rejected_calls: int = 0
    rejected_tokens: int = 0
    rejected_nanos: int = 0
    first_rejection: int | None = None


@dataclass
class Timeline:
    """What happened when, kept for drawing the replay.

    ``admitted`` holds (ns from the first call, tokens, nano-dollars) for each
    admitted call, at the time the budget counted it (after clamping);
    ``rejected`` holds (ns from the first call, window index, axis) for each
    refused call.
    """

    admitted: list[tuple[int, int, int]] = field(default_factory=list)
    rejected: list[tuple[int, int, Axis]] = field(default_factory=list)


@dataclass
class ReplayReport:
    """The outcome of one replay; ``timeline`` is None unless it was asked for."""

    log: UsageLog
    windows: list[WindowReport]
    admitted_calls: int = 0
    admitted_tokens: int = 0
    admitted_nanos: int = 0
    timeline: Timeline | None = None

    @property
    def rejected_calls(self) -> int:
        """Calls refused by any window."""
        return sum(w.rejected_calls for w in self.windows)

    @property
    def rejected_tokens(self) -> int:
        """Tokens of the refused calls."""
        return sum(w.rejected_tokens for w in self.windows)

    @property
    def rejected_nanos(self) -> int:
        """Nano-dollars of the refused calls."""
        return sum(w.rejected_nanos for w in self.windows)

    @property
    def first_rejection(self) -> int | None:
        """Index of the first refused call, or None."""
        firsts = [w.first_rejection for w in self.windows]
        return min((k for k in firsts if k is not None), default=None)


def _reported_axes(window: Window) -> list[AxisPeak]:
    """Return a peak for each capped axis, or for every axis if none is capped."""
    caps = [
        (Axis.TOKENS, window.token_cap),
        (Axis.USD, window.usd_cap),
        (Axis.REQUESTS, window.request_cap),
    ]
    capped = [AxisPeak(axis, cap) for axis, cap in caps if cap is not None]
    return capped or [AxisPeak(axis, None) for axis, _ in caps]


def replay(
    log: UsageLog,
    windows: Sequence[Window],
    engine: Callable[[Iterable[Window]], Budget],
    *,
    keep_timeline: bool = False,
) -> ReplayReport:
    """Feed every call of ``log`` through a new budget, in file order.

    ``engine`` builds the budget (an engine's ``BudgetWindows`` class). Each
    call happens at its own timestamp, measured from the first call's; a
    timestamp older than an earlier one is clamped by the budget to the
    latest time it has seen. Raises what the budget raises (OverflowError
    for a sum past the integer accounting on an uncapped axis).
    """
    budget = engine(windows)
    reports = [WindowReport(window, _reported_axes(window)) for window in windows]
    position = {window.name: i for i, window in enumerate(windows)}
    timeline = Timeline() if keep_timeline else None
    report = ReplayReport(log, reports, timeline=timeline)

    peak_tokens = [0] * len(windows)
    peak_usd = [0.0] * len(windows)
    peak_requests = [0] * len(windows)
    peak_at: list[list[int | None]] = [[None, None, None] for _ in windows]
    origin = log.times_ns[0]
    latest_ns = 0

    calls = zip(log.times_ns, log.tokens, log.usd_nanos, strict=True)
    for k, (time_ns, tokens, nanos) in enumerate(calls):
        elapsed_ns = time_ns - origin
        # The budget counts a call at the latest time it has seen, and so does
        # the timeline.
        latest_ns = max(latest_ns, elapsed_ns)
        now = _exact_units(elapsed_ns)
        usd = _exact_units(nanos) if nanos else 0
        breach = budget.try_record(tokens, usd, now=now)

        if breach is not None:
            refused = reports[position[breach.window_name]]
            refused.rejected_calls += 1
            refused.rejected_tokens += tokens
            refused.rejected_nanos += nanos
            if refused.first_rejection is None:
                refused.first_rejection = k
            for peak in refused.peaks:
                if peak.axis is breach.axis:
                    peak.rejected_calls += 1
            if timeline is not None:
                timeline.rejected.append(
                    (elapsed_ns, position[breach.window_name], breach.axis)
                )
            continue

        report.admitted_calls += 1
        report.admitted_tokens += tokens
        report.admitted_nanos += nanos
        if timeline is not None:
            timeline.admitted.append((latest_ns, tokens, nanos))
        for i, use in enumerate(budget.snapshot(now=now)):
            if use.tokens_used > peak_tokens[i]:
                peak_tokens[i] = use.tokens_used
                peak_at[i][0] = k
            if use.usd_used > peak_usd[i]:
                peak_usd[i] = use.usd_used
                peak_at[i][1] = k
            if use.requests_used > peak_requests[i]:
                peak_requests[i] = use.requests_used
                peak_at[i][2] = k

    for i, window_report in enumerate(reports):
        peaks = (peak_tokens[i], peak_usd[i], peak_requests[i])
        for peak in window_report.peaks:
            index = AXES.index(peak.axis)
            peak.peak = peaks[index]
            peak.reached_at = peak_at[i][index]
    return report


# ---------------------------------------------------------------------------
# Reports.


def _usd(nanos: int) -> float:
    return nanos / NANOS_PER_UNIT


def _moment(log: UsageLog, k: int | None) -> dict[str, Any] | None:
    if k is None:
        return None
    return {
        "timestamp": log.stamps[k],
        "seconds": (log.times_ns[k] - log.times_ns[0]) / NANOS_PER_UNIT,
        "line": log.lines[k],
    }


def report_dict(report: ReplayReport) -> dict[str, Any]:
    """Return the report as plain JSON data, in the documented schema."""
    log = report.log
    prices = log.prices
    windows = []
    for window_report in report.windows:
        window = window_report.window
        windows.append(
            {
                "name": window.name,
                "duration_seconds": window.duration,
                "caps": {
                    "tokens": window.token_cap,
                    "usd": window.usd_cap,
                    "requests": window.request_cap,
                },
                "peaks": {
                    peak.axis.value: {
                        "cap": peak.cap,
                        "peak": peak.peak,
                        "reached_at": _moment(log, peak.reached_at),
                        "rejected_calls": peak.rejected_calls,
                    }
                    for peak in window_report.peaks
                },
                "admitted_calls": report.admitted_calls,
                "rejected": {
                    "calls": window_report.rejected_calls,
                    "tokens": window_report.rejected_tokens,
                    "usd": _usd(window_report.rejected_nanos),
                    "first": _moment(log, window_report.first_rejection),
                },
            }
        )
    return {
        "report_format_version": REPORT_FORMAT_VERSION,
        "input": {
            "path": log.path,
            "format": log.format,
            "calls": len(log),
            "time_column": log.time_column,
            "token_columns": list(log.token_columns),
            "usd_column": log.usd_column,
            "prices_per_million_tokens": None
            if prices is None
            else {name: float(price) for name, price in prices.given().items()},
            "first_timestamp": log.stamps[0],
            "last_timestamp": log.stamps[-1],
            "span_seconds": (log.times_ns[-1] - log.times_ns[0]) / NANOS_PER_UNIT,
        },
        "admitted": {
            "calls": report.admitted_calls,
            "tokens": report.admitted_tokens,
            "usd": _usd(report.admitted_nanos),
        },
        "rejected": {
            "calls": report.rejected_calls,
            "tokens": report.rejected_tokens,
            "usd": _usd(report.rejected_nanos),
            "first": _moment(log, report.first_rejection),
        },
        "windows": windows,
    }


def render_json(report: ReplayReport) -> str:
    """Return the report as one JSON document, keys in a stable order."""
    return json.dumps(report_dict(report), indent=2)


def _count_text(count: int) -> str:
    return f"{count:,}"


def _calls_text(count: int) -> str:
    return f"{count:,} call" if count == 1 else f"{count:,} calls"


def _usd_text(dollars: float) -> str:
    # The dollars are a whole number of nano-dollars converted to float once,
    # so nine decimals give that number back; trailing zeros say nothing.
    whole, _, fraction = f"{dollars:,.9f}".partition(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def _seconds_text(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    whole, fraction = divmod(abs(ns), NANOS_PER_UNIT)
    digits = f"{fraction:09d}".rstrip("0")
    return f"{sign}{whole:,}" + (f".{digits}" if digits else "")


def _amount_text(axis: Axis, amount: int | float | None) -> str:
    if amount is None:
        return "-"
    if axis is Axis.USD:
        return _usd_text(amount)
    return _count_text(int(amount))


def _share_text(axis: Axis, peak: int | float, cap: int | float | None) -> str:
    if not cap:
        return "-"
    # Rounded down, so that a peak just under its cap never reads 100.00%.
    hundredths = math.floor(_exact(axis, peak) * 10_000 / _exact(axis, cap))
    return f"{hundredths // 100}.{hundredths % 100:02d}%"


def _exact_units(billionths: int) -> float | Fraction:
    """Return whole billionths (ns, nano-dollars) as units the budget reads exactly.

    A float where it converts back exactly (the budget's fast path), else a
    Fraction.
    """
    if -FLOAT_EXACT_BILLIONTHS < billionths < FLOAT_EXACT_BILLIONTHS:
        return billionths / NANOS_PER_UNIT
    return Fraction(billionths, NANOS_PER_UNIT)


def _exact(axis: Axis, amount: int | float) -> Fraction:
    """Return an amount as reported, exactly: USD back to whole nano-dollars.

    Float dollars are a whole number of nano-dollars divided once, so
    rounding them back recovers that number exactly below 2**52 nano-dollars
    (about $4.5 million).
    """
    if axis is Axis.USD:
        return Fraction(round(Fraction(amount) * NANOS_PER_UNIT), NANOS_PER_UNIT)
    return Fraction(amount)


def _moment_text(log: UsageLog, k: int | None) -> str:
    if k is None:
        return "-"
    offset = _seconds_text(log.times_ns[k] - log.times_ns[0])
    return f"{log.stamps[k]} (+{offset} s, line {log.lines[k]})"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Return aligned lines: text columns to the left, numbers to the right."""
    rows = [list(header), *map(list, rows)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    numeric = [
        all(_looks_numeric(row[c]) for row in rows[1:]) for c in range(len(header))
    ]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _looks_numeric(cell: str) -> bool:
    return bool(re.fullmatch(r"[-$]?[0-9][0-9,.]*(%| s)?|-", cell))


def _usage_text(log: UsageLog) -> str:
    tokens = " + ".join(log.token_columns)
    if log.prices is not None:
        rates = ", ".join(
            f"{name} ${price.normalize():f}"
            for name, price in log.prices.given().items()
        )
        usd = f"priced per million tokens at {rates or '$0'}"
    elif log.usd_column is not None:
        usd = f"from column {log.usd_column}"
    else:
        usd = "0 (no USD column and no --price)"
    return f"tokens per call: {tokens}; USD per call: {usd}"


def render_text(report: ReplayReport, engine: str) -> str:
    """Return the report as aligned text tables for a terminal."""
    log = report.log
    span = _seconds_text(log.times_ns[-1] - log.times_ns[0])
    lines = [
        f"Replay of {log.name}: {_calls_text(len(log))} from {log.stamps[0]} "
        f"to {log.stamps[-1]} ({span} s)",
        f"{_usage_text(log)}; engine: {engine}",
        f"Admitted {_calls_text(report.admitted_calls)} "
        f"({_count_text(report.admitted_tokens)} tokens, "
        f"{_usd_text(_usd(report.admitted_nanos))}); "
        f"rejected {_count_text(report.rejected_calls)} "
        f"({_count_text(report.rejected_tokens)} tokens, "
        f"{_usd_text(_usd(report.rejected_nanos))})",
        "",
        "Peak use against caps",
    ]
    lines += _table(
        ["window", "axis", "cap", "peak", "of cap", "first reached at", "rejected"],
        (
            [
                w.window.name,
                peak.axis.value,
                _amount_text(peak.axis, peak.cap),
                _amount_text(peak.axis, peak.peak),
                _share_text(peak.axis, peak.peak, peak.cap),
                _moment_text(log, peak.reached_at),
                _count_text(peak.rejected_calls),
            ]
            for w in report.windows
            for peak in w.peaks
        ),
    )
    lines += ["", "Rejections, each counted against the first window that refused it"]
    lines += _table(
        [
            "window",
            "duration",
            "admitted",
            "rejected",
            "rejected tokens",
            "rejected USD",
            "first rejection",
        ],
        (
            [
                w.window.name,
                f"{_seconds_text(w.window.duration_ns)} s",
                _count_text(report.admitted_calls),
                _count_text(w.rejected_calls),
                _count_text(w.rejected_tokens),
                _usd_text(_usd(w.rejected_nanos)),
                _moment_text(log, w.first_rejection),
            ]
            for w in report.windows
        ),
    )
    return "\n".join(lines) + "\n"
