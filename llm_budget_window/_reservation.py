"""Reservations: count an estimate before an LLM call, settle the actual after.

One class serves every engine called from sync code. An engine hands out a
Reservation from ``reserve`` and offers two primitives, ``_settle(seq,
tokens, nanos)`` and ``_release(seq)``, that rewrite or void the record
numbered ``seq`` in every window that still holds it. ``ReservationState``
is the part an asyncio form (whose engine's primitives are coroutines)
shares with it.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Protocol

from ._types import Number, nanos_to_usd, to_tokens, usd_to_nanos

__all__ = ["Reservation", "ReservationError", "ReservationState"]

# Guards the open -> settled/released transition of every reservation; it is
# held only to flip a state, never while an engine works.
_transition = threading.Lock()

OPEN = "open"
SETTLING = "settling"
SETTLED = "settled"
RELEASED = "released"


class ReservationError(RuntimeError):
    """Raised when a reservation is settled or released a second time."""


class _Engine(Protocol):
    def _settle(self, seq: int, tokens: int, nanos: int) -> None: ...
    def _release(self, seq: int) -> None: ...


class ReservationState:
    """The state every kind of reservation shares: amounts, and settled once.

    ``seq`` identifies the reservation's record to its engine (a sequence
    number in-process, a call number in Redis). Subclasses call ``_begin``
    before asking the engine to settle or release, then ``_finish`` when it
    did or ``_reopen`` when it raised.
    """

    __slots__ = ("_budget", "_seq", "_tokens", "_nanos", "_state")

    def __init__(self, budget: Any, seq: int, tokens: int, nanos: int) -> None:
        self._budget = budget
        self._seq = seq
        self._tokens = tokens
        self._nanos = nanos
        self._state = OPEN

    @property
    def tokens(self) -> int:
        """The tokens counted: the estimate, or the actual once settled."""
        return self._tokens

    @property
    def usd(self) -> float:
        """The dollars counted: the estimate, or the actual once settled."""
        return nanos_to_usd(self._nanos)

    @property
    def state(self) -> str:
        """``"open"``, ``"settled"`` or ``"released"``."""
        return SETTLED if self._state == SETTLING else self._state

    def _begin(self, action: str) -> None:
        with _transition:
            if self._state != OPEN:
                raise ReservationError(
                    f"cannot {action} a reservation that is already {self.state}"
                )
            self._state = SETTLING

    def _reopen(self) -> None:
        self._state = OPEN

    def _finish(self, state: str, tokens: int, nanos: int) -> None:
        self._tokens = tokens
        self._nanos = nanos
        self._state = state

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.state} tokens={self._tokens} "
            f"usd={self.usd!r}>"
        )


class Reservation(ReservationState):
    """An admitted call whose actual usage is not known yet.

    It counts as a call of its estimated tokens and USD at the time it was
    reserved. ``settle`` replaces the estimate by the actual amounts (never
    refused for going over a cap: the spend has happened), ``release`` removes
    the call as if it never happened. Exactly one of them may be called, once,
    from any thread. As a context manager, a normal exit keeps the estimate
    (or what was settled) and an exception releases the reservation.
    """

    __slots__ = ()

    def __init__(self, budget: _Engine, seq: int, tokens: int, nanos: int) -> None:
        super().__init__(budget, seq, tokens, nanos)

    def settle(self, tokens: int, usd: Number = 0) -> None:
        """Replace the estimate by the actual usage, at the original timestamp.

        Every window that still holds the call is corrected; a window the
        call has aged out of is untouched. A window pushed over its cap shows
        the overage (its remaining headroom reads 0) and refuses new calls
        until enough ages out. Raises ReservationError if already settled or
        released, and TypeError or ValueError for bad amounts (nothing changes).
        """
        tokens = to_tokens(tokens)
        nanos = usd_to_nanos(usd)
        self._begin("settle")
        try:
            self._budget._settle(self._seq, tokens, nanos)
        except BaseException:
            self._reopen()
            raise
        self._finish(SETTLED, tokens, nanos)

    def release(self) -> None:
        """Remove the call from every window that still holds it.

        For a call that did not happen (the LLM request failed). Raises
        ReservationError if already settled or released.
        """
        self._begin("release")
        try:
            self._budget._release(self._seq)
        except BaseException:
            self._reopen()
            raise
        self._finish(RELEASED, self._tokens, self._nanos)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None and self._state == OPEN:
            self.release()
