"""Cap LLM spend over several rolling time windows at once.

``BudgetWindows`` is the compiled core unless ``LLM_BUDGET_WINDOW_NO_EXTENSIONS``
is set in the environment or the core is not built, in which case it is the
pure-Python twin. ``IMPLEMENTATION`` says which: ``"c"`` or ``"py"``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ._reservation import Reservation, ReservationError
from ._types import Axis, Breach, Window, WindowBreached, WindowSnapshot
from ._waiting import AsyncReservation, WaitTimeout

__all__ = [
    "IMPLEMENTATION",
    "AsyncReservation",
    "Axis",
    "Breach",
    "BudgetWindows",
    "Reservation",
    "ReservationError",
    "WaitTimeout",
    "Window",
    "WindowBreached",
    "WindowSnapshot",
]

__version__ = "0.2.0"

if TYPE_CHECKING:
    from ._budget_py import BudgetWindows

    IMPLEMENTATION: str
elif os.environ.get("LLM_BUDGET_WINDOW_NO_EXTENSIONS"):
    from ._budget_py import BudgetWindows

    IMPLEMENTATION = "py"
else:
    try:
        from ._budget_c import BudgetWindows

        IMPLEMENTATION = "c"
    except ImportError:
        from ._budget_py import BudgetWindows

        IMPLEMENTATION = "py"
