"""Both engines, driven by the same random operations and clock, give identical
answers, and those answers match a naive model recomputed from the admitted
records."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from llm_budget_window import Axis, Breach, Window, WindowBreached, WindowSnapshot
from tests.conftest import ManualClock, load_engine

NANOS = 10**9
AXES = (Axis.TOKENS, Axis.USD, Axis.REQUESTS)

Number = int | float | Decimal | Fraction


def to_billionths(value: Number | str) -> int:
    """The contract's conversion of seconds or dollars: exact, half-to-even."""
    return round(Fraction(value) * NANOS)


def as_seconds(nanoseconds: int, form: str) -> Number:
    """Return nanoseconds as seconds in one of the forms a caller may use."""
    if form == "float":
        return nanoseconds / NANOS
    if form == "int" and nanoseconds % NANOS == 0:
        return nanoseconds // NANOS
    return Decimal(nanoseconds).scaleb(-9)


@dataclass
class Model:
    """A naive budget: every admitted record kept, every sum recomputed."""

    durations: list[int]
    caps: list[tuple[int | None, int | None, int | None]]
    windows: list[Window]
    records: list[tuple[int, int, int]] = field(default_factory=list)
    latest: int | None = None

    def advance(self, at: int) -> int:
        if self.latest is not None and at < self.latest:
            at = self.latest
        self.latest = at
        return at

    def sums(self, i: int, at: int) -> tuple[int, int, int]:
        inside = [r for r in self.records if at - r[0] < self.durations[i]]
        return (
            sum(r[1] for r in inside),
            sum(r[2] for r in inside),
            len(inside),
        )

    def fits(self, amounts: tuple[int, int, int], at: int) -> bool:
        for i, caps in enumerate(self.caps):
            sums = self.sums(i, at)
            for axis in range(3):
                cap = caps[axis]
                if cap is not None and sums[axis] + amounts[axis] > cap:
                    return False
        return True

    def wait_ns(self, amounts: tuple[int, int, int], at: int) -> int | None:
        """Nanoseconds until the request fits, by trying every expiry; None: never."""
        for caps in self.caps:
            for axis in range(3):
                cap = caps[axis]
                if cap is not None and amounts[axis] > cap:
                    return None
        expiries = {t + d for t, _, _ in self.records for d in self.durations}
        for when in sorted({at} | {e for e in expiries if e > at}):
            if self.fits(amounts, when):
                return when - at
        raise AssertionError("a request under every cap fits once all has aged out")

    def breach(self, amounts: tuple[int, int, int], at: int) -> Breach | None:
        for i, caps in enumerate(self.caps):
            sums = self.sums(i, at)
            for axis in range(3):
                cap = caps[axis]
                if cap is None or sums[axis] + amounts[axis] <= cap:
                    continue
                wait = self.wait_ns(amounts, at)
                retry = math.inf if wait is None else wait / NANOS
                used, requested = sums[axis], amounts[axis]
                if axis == 1:
                    return Breach(
                        self.windows[i].name,
                        Axis.USD,
                        (used + requested) / NANOS,
                        cap / NANOS,
                        used / NANOS,
                        requested / NANOS,
                        retry,
                    )
                return Breach(
                    self.windows[i].name,
                    AXES[axis],
                    used + requested,
                    cap,
                    used,
                    requested,
                    retry,
                )
        return None

    def snapshot(self, at: int) -> list[WindowSnapshot]:
        result = []
        for i, window in enumerate(self.windows):
            tokens, nanos, requests = self.sums(i, at)
            token_cap, nanos_cap, request_cap = self.caps[i]
            result.append(
                WindowSnapshot(
                    name=window.name,
                    duration=self.durations[i] / NANOS,
                    tokens_used=tokens,
                    usd_used=nanos / NANOS,
                    requests_used=requests,
                    token_cap=token_cap,
                    usd_cap=None if nanos_cap is None else nanos_cap / NANOS,
                    request_cap=request_cap,
                    entry_count=requests,
                    tokens_remaining=None
                    if token_cap is None
                    else max(token_cap - tokens, 0),
                    usd_remaining=None
                    if nanos_cap is None
                    else max(nanos_cap - nanos, 0) / NANOS,
                    requests_remaining=None
                    if request_cap is None
                    else max(request_cap - requests, 0),
                )
            )
        return result


DURATIONS_NS = st.one_of(
    st.sampled_from([1, 2, 7, 1_000, NANOS, 3 * NANOS, 10 * NANOS]),
    st.integers(1, 20 * NANOS),
)


@st.composite
def window_sets(draw: st.DrawFn) -> list[Window]:
    count = draw(st.integers(1, 3))
    windows = []
    for i in range(count):
        duration_ns = draw(DURATIONS_NS)
        usd_cap_nanos = draw(st.none() | st.integers(0, NANOS))
        windows.append(
            Window(
                f"w{i}",
                draw(
                    st.sampled_from(["decimal", "float", "int"]).map(
                        lambda form, d=duration_ns: as_seconds(d, form)
                    )
                ),
                token_cap=draw(st.none() | st.integers(0, 300)),
                usd_cap=None
                if usd_cap_nanos is None
                else Decimal(usd_cap_nanos).scaleb(-9),
                request_cap=draw(st.none() | st.integers(0, 6)),
            )
        )
    return windows


TOKENS = st.one_of(st.integers(0, 120), st.sampled_from([0, 1, 300, 301]))
USD_NANOS = st.one_of(
    st.integers(0, 400_000_000), st.sampled_from([0, 1, NANOS, NANOS + 1])
)
USD_FORMS = st.sampled_from(["decimal", "str", "float", "int"])
TIME_FORMS = st.sampled_from(["decimal", "float", "int"])

# Offsets of an explicit `now` from the clock, in nanoseconds.
NOW_OFFSETS = st.one_of(
    st.none(),
    st.sampled_from([0, -1, 1]),
    st.integers(-3 * NANOS, 3 * NANOS),
)


def usd_value(nanos: int, form: str) -> Number | str:
    if form == "float":
        return nanos / NANOS
    if form == "str":
        return str(Decimal(nanos).scaleb(-9))
    if form == "int" and nanos % NANOS == 0:
        return nanos // NANOS
    return Decimal(nanos).scaleb(-9)


BAD_CALLS = [
    ("try_record", (-1,), {}),
    ("record", (True,), {}),
    ("check", (1.5,), {}),
    ("retry_after", (2**62,), {}),
    ("try_record", (1,), {"usd": math.nan}),
    ("record", (1,), {"usd": -0.5}),
    ("check", (1,), {"usd": math.inf}),
    ("try_record", (1,), {"usd": "a lot"}),
    ("record", (1,), {"now": math.nan}),
    ("snapshot", (), {"now": "later"}),
]


class SameAnswers(RuleBasedStateMachine):
    """Drive both engines and the model in lockstep; compare every answer."""

    def __init__(self, engines: list[type[Any]]) -> None:
        super().__init__()
        self.engine_classes = engines
        self.clock = ManualClock(0)
        self.clock_ns = 0
        self.budgets: list[Any] = []
        self.model: Model

    @initialize(windows=window_sets(), start=st.integers(-(10**12), 10**12))
    def build(self, windows: list[Window], start: int) -> None:
        self.set_clock(start, "decimal")
        self.budgets = [cls(windows, clock=self.clock) for cls in self.engine_classes]
        self.model = Model(
            durations=[w.duration_ns for w in windows],
            caps=[(w.token_cap, w.usd_cap_nanos, w.request_cap) for w in windows],
            windows=windows,
        )

    # -- helpers --------------------------------------------------------------

    def set_clock(self, nanoseconds: int, form: str) -> None:
        self.clock.value = as_seconds(nanoseconds, form)
        self.clock_ns = to_billionths(self.clock.value)

    def call_now(self, offset: int | None, form: str) -> tuple[Number | None, int]:
        """Return the `now` argument for a call and its time in nanoseconds."""
        if offset is None:
            return None, self.clock_ns
        now = as_seconds(self.clock_ns + offset, form)
        return now, to_billionths(now)

    def on_every_engine(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a method on every engine; assert identical results and return one."""
        outcomes = []
        for budget in self.budgets:
            try:
                outcomes.append(("returned", getattr(budget, method)(*args, **kwargs)))
            except WindowBreached as exc:
                outcomes.append(("breached", exc.breach))
            except (TypeError, ValueError) as exc:
                outcomes.append(("raised", (type(exc), str(exc))))
        for outcome in outcomes[1:]:
            assert outcome == outcomes[0], (method, args, kwargs, outcomes)
        return outcomes[0]

    # -- rules ----------------------------------------------------------------

    @rule(
        tokens=TOKENS,
        nanos=USD_NANOS,
        usd_form=USD_FORMS,
        offset=NOW_OFFSETS,
        now_form=TIME_FORMS,
    )
    def try_record(
        self, tokens: int, nanos: int, usd_form: str, offset: int | None, now_form: str
    ) -> None:
        self.admit("try_record", tokens, usd_value(nanos, usd_form), offset, now_form)

    @rule(
        tokens=TOKENS,
        nanos=USD_NANOS,
        usd_form=USD_FORMS,
        offset=NOW_OFFSETS,
        now_form=TIME_FORMS,
    )
    def record(
        self, tokens: int, nanos: int, usd_form: str, offset: int | None, now_form: str
    ) -> None:
        self.admit("record", tokens, usd_value(nanos, usd_form), offset, now_form)

    @rule(
        axis=st.sampled_from([0, 1, 2]),
        extra=st.sampled_from([0, 0, 1]),
        offset=NOW_OFFSETS,
    )
    def fill_to_the_cap(self, axis: int, extra: int, offset: int | None) -> None:
        """Ask for exactly the headroom left on one axis (plus 0 or 1 unit)."""
        _, at = self.call_now(offset, "decimal")
        at = max(at, self.model.latest) if self.model.latest is not None else at
        headroom = [
            caps[axis] - self.model.sums(i, at)[axis]
            for i, caps in enumerate(self.model.caps)
            if caps[axis] is not None
        ]
        amount = max(min(headroom, default=0), 0) + extra
        tokens = amount if axis == 0 else 0
        nanos = amount if axis == 1 else 0
        usd = Decimal(nanos).scaleb(-9)
        self.admit("try_record", min(tokens, 2**62 - 1), usd, offset, "decimal")

    def admit(
        self, method: str, tokens: int, usd: Number | str, offset: int | None, form: str
    ) -> None:
        now, raw_ns = self.call_now(offset, form)
        kind, result = self.on_every_engine(method, tokens, usd=usd, now=now)

        amounts = (tokens, to_billionths(usd), 1)
        at = self.model.advance(raw_ns)
        expected = self.model.breach(amounts, at)
        if method == "record":
            assert (kind, result) == (
                ("returned", None) if expected is None else ("breached", expected)
            )
        else:
            assert (kind, result) == ("returned", expected)
        if expected is None:
            self.model.records.append((at, amounts[0], amounts[1]))

    @rule(tokens=TOKENS, nanos=USD_NANOS, usd_form=USD_FORMS, offset=NOW_OFFSETS)
    def check(self, tokens: int, nanos: int, usd_form: str, offset: int | None) -> None:
        now, raw_ns = self.call_now(offset, "decimal")
        usd = usd_value(nanos, usd_form)
        kind, result = self.on_every_engine("check", tokens, usd=usd, now=now)

        at = self.model.advance(raw_ns)
        amounts = (tokens, to_billionths(usd), 1)
        assert (kind, result) == ("returned", self.model.breach(amounts, at))

    @rule(tokens=TOKENS, nanos=USD_NANOS, offset=NOW_OFFSETS, now_form=TIME_FORMS)
    def retry_after(
        self, tokens: int, nanos: int, offset: int | None, now_form: str
    ) -> None:
        now, raw_ns = self.call_now(offset, now_form)
        usd = Decimal(nanos).scaleb(-9)
        kind, result = self.on_every_engine("retry_after", tokens, usd=usd, now=now)

        at = self.model.advance(raw_ns)
        wait = self.model.wait_ns((tokens, nanos, 1), at)
        assert kind == "returned"
        assert type(result) is float
        assert result == (math.inf if wait is None else wait / NANOS)

    @rule(offset=NOW_OFFSETS, now_form=TIME_FORMS)
    def snapshot(self, offset: int | None, now_form: str) -> None:
        now, raw_ns = self.call_now(offset, now_form)
        kind, result = self.on_every_engine("snapshot", now=now)

        at = self.model.advance(raw_ns)
        assert (kind, result) == ("returned", self.model.snapshot(at))

    @rule()
    def reset(self) -> None:
        assert self.on_every_engine("reset") == ("returned", None)
        self.model.records.clear()
        self.model.latest = None

    @rule(
        step=st.one_of(
            st.just(0),
            st.sampled_from([1, -1, NANOS, -NANOS]),
            st.integers(-2 * NANOS, 5 * NANOS),
        ),
        form=TIME_FORMS,
    )
    def move_clock(self, step: int, form: str) -> None:
        self.set_clock(self.clock_ns + step, form)

    @precondition(lambda self: bool(self.model.records))
    @rule(data=st.data(), nudge=st.sampled_from([-1, 0, 0, 1]))
    def move_clock_to_an_expiry(self, data: st.DataObject, nudge: int) -> None:
        """Set the clock to when a record leaves a window, or 1 ns either side."""
        t, _, _ = data.draw(st.sampled_from(self.model.records))
        duration = data.draw(st.sampled_from(self.model.durations))
        self.set_clock(t + duration + nudge, "decimal")

    @rule(call=st.sampled_from(BAD_CALLS))
    def bad_call(self, call: tuple[str, tuple[Any, ...], dict[str, Any]]) -> None:
        method, args, kwargs = call
        kind, result = self.on_every_engine(method, *args, **kwargs)

        assert kind == "raised"
        assert result[0] in (TypeError, ValueError)

    # -- invariants -----------------------------------------------------------

    @invariant()
    def sums_equal_a_naive_recomputation_of_the_admitted_records(self) -> None:
        latest = self.model.latest
        if latest is None:
            return
        # Reading at the latest time seen moves nothing: no time passes.
        kind, result = self.on_every_engine("snapshot", now=Decimal(latest).scaleb(-9))
        assert (kind, result) == ("returned", self.model.snapshot(latest))


def test_engines_agree_with_each_other_and_with_a_naive_model() -> None:
    engines = [load_engine("c"), load_engine("py")]

    run_state_machine_as_test(
        lambda: SameAnswers(engines),
        settings=settings(max_examples=150, stateful_step_count=40),
    )
