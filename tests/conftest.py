"""Fixtures shared by the whole suite.

Behaviour tests take ``make_budget``, a factory ``make_budget(windows,
clock=None)`` that builds a budget on one engine; the fixture is parametrized
over every engine in ``ENGINES`` (ids ``c`` and ``py``), so each behaviour test
runs once per engine. To add a backend, append its id to ``ENGINES`` and define
a fixture ``budget_factory_<id>`` that returns a ``BudgetFactory``; it may
depend on other fixtures (a server, a cleanup) like any fixture.

If the compiled core is not built, the ``c`` tests are skipped, unless the
environment variable ``CI`` is set: then they fail, so that a broken build
cannot pass unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from llm_budget_window import Window

ENGINES = ["c", "py"]

IN_CI = bool(os.environ.get("CI"))

# Reproducible in CI (no example database, a fixed seed); the local profile
# keeps the database so that a failure found once is replayed first next time.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if IN_CI else "dev"))


def load_engine(name: str) -> type[Any]:
    """Return the BudgetWindows class of one in-process engine, ``c`` or ``py``.

    Skips the calling test when the compiled core is missing, or fails it when
    the environment variable ``CI`` is set.
    """
    if name == "py":
        from llm_budget_window._budget_py import BudgetWindows as PyBudgetWindows

        return PyBudgetWindows
    if name == "c":
        try:
            from llm_budget_window._budget_c import BudgetWindows as CBudgetWindows
        except ImportError as exc:
            reason = (
                "the compiled core llm_budget_window._budget_c is not built "
                f"({exc}); build it with `python setup.py build_ext --inplace`"
            )
            if IN_CI:
                pytest.fail(f"CI is set, so this is an error: {reason}", pytrace=False)
            pytest.skip(reason)
        return CBudgetWindows
    raise ValueError(f"unknown in-process engine {name!r}")


class BudgetFactory:
    """Build budgets on one engine: ``factory(windows, clock=None, **options)``."""

    def __init__(self, engine: str, build: Callable[..., Any]) -> None:
        self.engine = engine
        self._build = build

    def __call__(
        self,
        windows: Iterable[Window],
        clock: Callable[[], object] | None = None,
        **options: Any,
    ) -> Any:
        return self._build(windows, clock=clock, **options)

    def __repr__(self) -> str:
        return f"BudgetFactory({self.engine!r})"


@pytest.fixture
def budget_factory_c() -> BudgetFactory:
    return BudgetFactory("c", load_engine("c"))


@pytest.fixture
def budget_factory_py() -> BudgetFactory:
    return BudgetFactory("py", load_engine("py"))


@pytest.fixture(params=ENGINES)
def make_budget(request: pytest.FixtureRequest) -> BudgetFactory:
    """A factory of budgets on each engine in turn (ids ``c``, ``py``, ...)."""
    factory: BudgetFactory = request.getfixturevalue(f"budget_factory_{request.param}")
    return factory


class ManualClock:
    """A clock for ``clock=`` that moves only when told to.

    Returns ``value`` as given (int, float, Decimal or Fraction seconds).
    """

    def __init__(self, value: int | float | Decimal | Fraction = 0) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> int | float | Decimal | Fraction:
        self.calls += 1
        return self.value

    def advance(self, seconds: int | float | Decimal | Fraction) -> None:
        self.value += seconds  # type: ignore[assignment, operator]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def ns(nanoseconds: int) -> Decimal:
    """Return a whole number of nanoseconds as exact seconds, for ``now=``."""
    return Decimal(nanoseconds).scaleb(-9)
