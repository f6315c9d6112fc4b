# cython: language_level=3
"""The floor: what any compiled ``record`` call cannot avoid.

A method with the same signature as ``BudgetWindows.record`` that reads the
monotonic clock in C, keeps the reading (so the compiler cannot drop it) and
returns None.
"""

from cpython.time cimport monotonic_ns
from libc.stdint cimport int64_t


cdef class Floor:
    """A compiled call plus one monotonic clock read, and nothing else."""

    cdef int64_t last_ns

    def record(self, tokens, usd=0, *, now=None):
        """Read the clock and return None; the arguments are not looked at."""
        self.last_ns = monotonic_ns()
