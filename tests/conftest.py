"""Fixtures shared by the whole suite.

Behaviour tests take ``make_budget``, a factory ``make_budget(windows,
clock=None)`` that builds a budget on one engine; the fixture is parametrized
over every engine in ``ENGINES`` (ids ``c``, ``py`` and ``redis``), so each
behaviour test runs once per engine. To add a backend, append its id to
``ENGINES`` and define a fixture ``budget_factory_<id>`` that returns a
``BudgetFactory``; it may depend on other fixtures (a server, a cleanup) like
any fixture.

If the compiled core is not built, the ``c`` tests are skipped, unless the
environment variable ``CI`` is set: then they fail, so that a broken build
cannot pass unnoticed. The ``redis`` tests carry the ``redis`` marker and
need a server (see ``tests/redis_server.py``): skipped without one, failed
without one when ``CI`` is set. A behaviour that the Redis backend does not
share (a ``clock=`` callable, the in-process repr) is listed in
``NOT_ON_REDIS`` with the reason, and its test is skipped on ``redis`` only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from llm_budget_window import Window

from .redis_server import (
    ClockedRedisBudget,
    private_redis_server,
    redis_client,
    redis_url,
    unique_name,
)

__all__ = ["private_redis_server", "redis_client", "redis_url"]

ENGINES = ["c", "py", "redis"]

#: Engines that need a server: their tests carry the ``redis`` marker.
SERVER_ENGINES = {"redis"}

_NO_CLOCK = (
    "the Redis budget has no clock= (time is the server's, or now=); this "
    "test is about the clock callable itself"
)

#: Behaviour tests that do not apply to the Redis backend, by module and
#: test name (or ``*`` for a whole module), with the reason.
NOT_ON_REDIS: dict[tuple[str, str], str] = {
    ("test_budget", "test_default_clock_is_the_monotonic_clock_in_nanoseconds"): (
        "the Redis budget's default clock is the server's TIME, tested in test_redis.py"
    ),
    ("test_budget", "test_exception_from_the_clock_propagates_and_commits_nothing"): (
        _NO_CLOCK
    ),
    ("test_budget", "test_budget_repr_lists_its_windows"): (
        "the Redis budget's repr names its class, budget name and fail_open"
    ),
    (
        "test_bad_input",
        "test_bad_clock_reading_raises_naming_the_clock_and_changes_nothing",
    ): (_NO_CLOCK),
    ("test_bad_input", "test_uncallable_clock_raises_type_error_naming_clock"): (
        _NO_CLOCK
    ),
    ("test_budget", "test_subclass_that_skips_init_raises_runtime_error_on_use"): (
        "the Redis budget is built around a client; a subclass skipping its "
        "__init__ is an in-process engine concern"
    ),
    ("test_async", "*"): (
        "the sync Redis budget has no asyncio methods (a blocking round trip "
        "would stall the loop); AsyncRedisBudgetWindows's waiting is tested in "
        "test_redis_waiting.py"
    ),
}

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


@pytest.fixture
def budget_factory_redis(request: pytest.FixtureRequest) -> Iterator[BudgetFactory]:
    """Build RedisBudgetWindows on the session's server, each under a new name.

    A test's ``clock=`` becomes the ``now=`` of every call that omits it.
    """
    import redis

    module = request.node.module.__name__.rsplit(".", 1)[-1]
    name = getattr(request.node, "originalname", request.node.name)
    reason = NOT_ON_REDIS.get((module, name)) or NOT_ON_REDIS.get((module, "*"))
    if reason is not None:
        pytest.skip(reason)
    # Only now, so that a test that does not apply is skipped, not failed,
    # when there is no server.
    redis_url: str = request.getfixturevalue("redis_url")
    clients: list[redis.Redis] = []

    def build(
        windows: Iterable[Window],
        clock: Callable[[], Any] | None = None,
        **options: Any,
    ) -> ClockedRedisBudget:
        client = redis.Redis.from_url(redis_url)
        clients.append(client)
        return ClockedRedisBudget(
            client, unique_name(), windows, clock=clock, **options
        )

    yield BudgetFactory("redis", build)
    for client in clients:
        client.close()


@pytest.fixture(
    params=[
        pytest.param(engine, marks=pytest.mark.redis)
        if engine in SERVER_ENGINES
        else engine
        for engine in ENGINES
    ]
)
def make_budget(request: pytest.FixtureRequest) -> BudgetFactory:
    """A factory of budgets on each engine in turn (ids ``c``, ``py``, ``redis``)."""
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
