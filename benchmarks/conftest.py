"""Fixtures of the pytest-benchmark suite (``python -m pytest benchmarks/``).

``engine`` is the BudgetWindows class of each in-process engine in turn, with
ids ``c`` (the compiled core) and ``py`` (the pure-Python twin). These files
sit outside ``testpaths``, so the default test run never collects them.
"""

from __future__ import annotations

from typing import Any

import pytest

ENGINES = ["c", "py"]


def load_engine(name: str) -> type[Any]:
    """Return the BudgetWindows class of engine ``c`` or ``py``; skip if not built."""
    if name == "py":
        from llm_budget_window._budget_py import BudgetWindows as PyBudgetWindows

        return PyBudgetWindows
    try:
        from llm_budget_window._budget_c import BudgetWindows as CBudgetWindows
    except ImportError as exc:
        pytest.skip(f"the compiled core is not built ({exc})")
    return CBudgetWindows


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> type[Any]:
    """The BudgetWindows class of each engine in turn (ids ``c``, ``py``)."""
    return load_engine(request.param)
