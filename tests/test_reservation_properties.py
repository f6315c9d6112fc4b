"""Property: reservations keep both engines identical and their sums exact.

Random interleavings of reserve, settle, release, record, try_record, check,
retry_after, snapshot, reset and steps of time run on the compiled engine, the
pure-Python engine and a naive model side by side. The model keeps every call
as (timestamp, tokens, nano-dollars, alive) and recomputes each window's sums
from scratch, so it shares no bookkeeping with either engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_budget_window import Axis, Breach, ReservationError, Window, WindowBreached

if TYPE_CHECKING:
    from tests.conftest import BudgetFactory

NS = 1_000_000_000
MS = 1_000_000
NANOS_PER_CENT = 10_000_000
AXES = (Axis.TOKENS, Axis.USD, Axis.REQUESTS)


# -- the model -----------------------------------------------------------------


@dataclass
class Call:
    timestamp: int
    tokens: int
    nanos: int
    alive: bool = True


@dataclass
class ModelReservation:
    call: Call
    state: str = "open"


@dataclass
class Model:
    """The naive reference: a list of calls, summed from scratch on demand."""

    windows: list[Window]
    calls: list[Call] = field(default_factory=list)
    latest: int | None = None

    def at(self, now: int) -> int:
        """Return the effective time of a call at ``now`` ns, and remember it."""
        if self.latest is not None and now < self.latest:
            now = self.latest
        self.latest = now
        return now

    def sums(self, window: Window, at: int) -> tuple[int, int, int]:
        inside = [
            call
            for call in self.calls
            if call.alive and at - call.timestamp < window.duration_ns
        ]
        return (
            sum(call.tokens for call in inside),
            sum(call.nanos for call in inside),
            len(inside),
        )

    def fits(self, tokens: int, nanos: int, at: int) -> bool:
        return all(
            cap is None or used + amount <= cap
            for window in self.windows
            for used, amount, cap in zip(
                self.sums(window, at), (tokens, nanos, 1), caps(window), strict=True
            )
        )

    def wait_ns(self, tokens: int, nanos: int, at: int) -> float:
        """Return ns until the call fits, trying every moment a call ages out."""
        for window in self.windows:
            for amount, cap in zip((tokens, nanos, 1), caps(window), strict=True):
                if cap is not None and amount > cap:
                    return math.inf
        moments = sorted(
            {at}
            | {
                call.timestamp + window.duration_ns
                for call in self.calls
                for window in self.windows
                if call.timestamp + window.duration_ns > at
            }
        )
        for moment in moments:
            if self.fits(tokens, nanos, moment):
                return moment - at
        raise AssertionError("a call no larger than every cap fits once all age out")

    def breach(self, tokens: int, nanos: int, at: int) -> Breach | None:
        """Return the first breach in window order, then tokens, USD, requests."""
        for window in self.windows:
            used_all = self.sums(window, at)
            for axis, used, amount, cap in zip(
                AXES, used_all, (tokens, nanos, 1), caps(window), strict=True
            ):
                if cap is None or used + amount <= cap:
                    continue
                wait = self.wait_ns(tokens, nanos, at)
                retry_after = wait / NS
                if axis is Axis.USD:
                    return Breach(
                        window.name,
                        axis,
                        (used + amount) / NS,
                        cap / NS,
                        used / NS,
                        amount / NS,
                        retry_after,
                    )
                return Breach(
                    window.name, axis, used + amount, cap, used, amount, retry_after
                )
        return None

    def commit(self, tokens: int, nanos: int, at: int) -> Call:
        call = Call(at, tokens, nanos)
        self.calls.append(call)
        return call

    def reset(self) -> None:
        for call in self.calls:
            call.alive = False
        self.calls = []
        self.latest = None


def caps(window: Window) -> tuple[int | None, int | None, int | None]:
    return (window.token_cap, window.usd_cap_nanos, window.request_cap)


# -- strategies ----------------------------------------------------------------

durations_ms = st.sampled_from([500, 1000, 1500, 3000])


def caps_of(room: st.SearchStrategy[int], tiny: list[int]) -> st.SearchStrategy[Any]:
    """Draw a cap: mostly none or room for a few calls, now and then a tiny one.

    Roomy caps let reservations be admitted, then settled or released; tiny
    ones (0, about one call) exercise refusals and overage.
    """
    return st.one_of(st.none(), st.none(), room, room, room, st.sampled_from(tiny))


token_caps = caps_of(st.integers(30, 200), [0, 1, 20])
usd_caps_cents = caps_of(st.integers(30, 200), [0, 1, 20])
request_caps = caps_of(st.integers(2, 12), [0, 1])


@st.composite
def window_lists(draw: st.DrawFn) -> list[Window]:
    count = draw(st.integers(1, 3))
    windows = []
    for i in range(count):
        cents = draw(usd_caps_cents)
        windows.append(
            Window(
                f"w{i}",
                Fraction(draw(durations_ms), 1000),
                token_cap=draw(token_caps),
                usd_cap=None if cents is None else Decimal(cents).scaleb(-2),
                request_cap=draw(request_caps),
            )
        )
    return windows


amounts = st.tuples(st.integers(0, 20), st.integers(0, 20))  # tokens, cents
# Mostly the current time, sometimes a moment before the latest one seen.
lags_ms = st.sampled_from([0, 0, 0, 700])
steps_ms = st.sampled_from([0, 250, 500, 1000, 1500, 3000])
picks = st.integers(0, 1_000)

operations = st.one_of(
    st.tuples(st.just("step"), steps_ms),
    st.tuples(st.just("step"), steps_ms),
    st.tuples(st.just("record"), amounts, lags_ms),
    st.tuples(st.just("try_record"), amounts, lags_ms),
    st.tuples(st.just("check"), amounts, lags_ms),
    st.tuples(st.just("retry_after"), amounts, lags_ms),
    st.tuples(st.just("reserve"), amounts, lags_ms),
    st.tuples(st.just("reserve"), amounts, lags_ms),
    st.tuples(st.just("reserve"), amounts, lags_ms),
    st.tuples(st.just("settle"), picks, amounts),
    st.tuples(st.just("settle"), picks, amounts),
    st.tuples(st.just("settle"), picks, amounts),
    st.tuples(st.just("release"), picks),
    st.tuples(st.just("snapshot"), lags_ms),
    st.tuples(st.just("reset")),
)


# -- running one interleaving --------------------------------------------------


def seconds(ns: int) -> Fraction:
    return Fraction(ns, NS)


def usd(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def outcome(function: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """Return ("ok", result) or ("raised", (type, breach or message))."""
    try:
        return "ok", function(*args, **kwargs)
    except WindowBreached as exc:
        return "raised", (WindowBreached, exc.breach)
    except ReservationError:
        return "raised", (ReservationError, None)


def sums_of(snapshots: list[Any]) -> list[tuple[int, float, int]]:
    return [(s.tokens_used, s.usd_used, s.requests_used) for s in snapshots]


def expected_sums(model: Model, at: int) -> list[tuple[int, float, int]]:
    result = []
    for window in model.windows:
        tokens, nanos, requests = model.sums(window, at)
        result.append((tokens, nanos / NS, requests))
    return result


def run(
    engines: list[Any], model: Model, ops: list[tuple[Any, ...]], start_ms: int
) -> None:
    now = start_ms * MS
    reservations: list[tuple[list[Any], ModelReservation]] = []

    for op in ops:
        kind = op[0]

        if kind == "step":
            now += op[1] * MS
            continue

        if kind == "reset":
            for engine in engines:
                engine.reset()
            model.reset()
            continue

        if kind in ("settle", "release"):
            if not reservations:
                continue
            handles, expected = reservations[op[1] % len(reservations)]
            if kind == "settle":
                tokens, cents = op[2]
                results = [outcome(r.settle, tokens, usd(cents)) for r in handles]
            else:
                results = [outcome(r.release) for r in handles]
            if expected.state == "open":
                assert results == [("ok", None)] * len(handles), op
                if kind == "settle":
                    expected.call.tokens = tokens
                    expected.call.nanos = cents * NANOS_PER_CENT
                    expected.state = "settled"
                else:
                    expected.call.alive = False
                    expected.state = "released"
            else:
                assert results == [("raised", (ReservationError, None))] * len(
                    handles
                ), op
            for handle in handles:
                assert handle.state == expected.state
                assert handle.tokens == expected.call.tokens
                assert handle.usd == expected.call.nanos / NS
            continue

        lag = op[-1] * MS
        call_now = seconds(now - lag)
        at = model.at(now - lag)

        if kind == "snapshot":
            snapshots = [engine.snapshot(now=call_now) for engine in engines]
            assert snapshots[0] == snapshots[-1], op
            assert sums_of(snapshots[0]) == expected_sums(model, at), op
            continue

        tokens, cents = op[1]
        nanos = cents * NANOS_PER_CENT
        breach = model.breach(tokens, nanos, at)
        results = []
        for engine in engines:
            method = getattr(engine, kind)
            results.append(outcome(method, tokens, usd(cents), now=call_now))

        if kind == "retry_after":
            wait = model.wait_ns(tokens, nanos, at)
            assert results == [("ok", wait / NS)] * len(engines), op
        elif kind in ("check", "try_record"):
            assert results == [("ok", breach)] * len(engines), op
        elif breach is not None:
            assert results == [("raised", (WindowBreached, breach))] * len(engines), op
        else:
            assert [status for status, _ in results] == ["ok"] * len(engines), op

        if breach is None and kind in ("record", "try_record", "reserve"):
            call = model.commit(tokens, nanos, at)
            if kind == "reserve":
                handles = [result for _, result in results]
                for handle in handles:
                    assert handle.state == "open"
                    assert handle.tokens == tokens
                    assert handle.usd == nanos / NS
                reservations.append((handles, ModelReservation(call)))

    # Once everything has aged out of the longest window, every sum is zero.
    longest = max(window.duration_ns for window in model.windows)
    end = seconds(max(now, model.latest or now) + longest)
    for engine in engines:
        assert sums_of(engine.snapshot(now=end)) == [(0, 0.0, 0)] * len(model.windows)


@settings(
    max_examples=800,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    windows=window_lists(),
    ops=st.lists(operations, min_size=10, max_size=80),
    start_ms=st.integers(-5_000, 5_000),
)
def test_reservation_interleavings_agree_across_engines_and_with_naive_sums(
    budget_factory_c: BudgetFactory,
    budget_factory_py: BudgetFactory,
    windows: list[Window],
    ops: list[tuple[Any, ...]],
    start_ms: int,
) -> None:
    engines = [budget_factory_c(windows), budget_factory_py(windows)]

    run(engines, Model(windows), ops, start_ms)
