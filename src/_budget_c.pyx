# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: freethreading_compatible=True
"""The compiled engine: one C ring of records shared by every window.

The critical section (evict, check, commit) is plain C that touches no Python
object and runs under a C mutex. Arguments are converted before it, and
Python results are built after it.
"""

cimport cython
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.time cimport monotonic_ns
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from _ring cimport (
    GIL_SERIALIZES,
    Problem,
    Record,
    Ring,
    WindowState,
    lbw_double_to_nanos,
)

from llm_budget_window._reservation import Reservation
from llm_budget_window._types import (
    WindowBreached,
    make_breach,
    make_snapshot,
    overflow_error,
    seconds_to_ns,
    to_tokens,
    usd_to_nanos,
    validate_windows,
    wait_to_seconds,
)
from llm_budget_window._waiting import (
    AsyncReservation,
    WaitQueue,
    arecord,
    record_wait,
    reserve_wait,
)

cdef enum:
    MIN_CAPACITY = 16
    RELEASED = -1
    OK = 0
    PROBLEM = 1

cdef int64_t MAX_AMOUNT = 1 << 62
cdef int64_t NANOS_PER_UNIT = 1000000000
# The largest whole number of dollars or seconds whose billionths stay below 2**62.
cdef int64_t MAX_WHOLE_UNITS = ((1 << 62) - 1) // 1000000000
# Below 2**52 ns, ns / 1e9 converts back to exactly ns (see wait_to_seconds).
cdef int64_t FLOAT_EXACT_NS = 1 << 52


# -- the ring, in C ------------------------------------------------------------

cdef int ring_init(Ring *ring, Py_ssize_t n_windows) noexcept nogil:
    ring.records = <Record *> malloc(MIN_CAPACITY * sizeof(Record))
    ring.windows = <WindowState *> malloc(n_windows * sizeof(WindowState))
    if ring.records == NULL or ring.windows == NULL:
        return -1
    ring.mask = MIN_CAPACITY - 1
    ring.next = 0
    ring.latest = INT64_MIN
    ring.n_windows = n_windows
    ring.longest = 0
    return 0


cdef void ring_clear(Ring *ring) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(ring.n_windows):
        ring.windows[i].head = ring.next
        ring.windows[i].sum[0] = 0
        ring.windows[i].sum[1] = 0
        ring.windows[i].sum[2] = 0
    ring.latest = INT64_MIN
    ring_resize(ring, MIN_CAPACITY)


cdef int ring_grow(Ring *ring) noexcept nogil:
    """Double the capacity of a full ring, in place where the allocator can.

    Record ``seq`` lives at ``seq & mask``. After doubling, the records whose
    sequence number has the old capacity's bit set belong in the new upper
    half; they are one contiguous run, the only part copied. The rest stays
    where it is, so growing a ring that has never evicted copies nothing
    beyond what ``realloc`` itself moves.
    """
    cdef uint64_t capacity = ring.mask + 1
    cdef uint64_t tail = ring.windows[ring.longest].head
    cdef uint64_t first, count
    cdef Record *records = <Record *> realloc(
        ring.records, 2 * capacity * sizeof(Record)
    )
    if records == NULL:
        return -1
    if tail & capacity:
        first = tail
        count = capacity - (tail & ring.mask)
    else:
        first = (tail | ring.mask) + 1
        count = ring.next - first
    if count:
        memcpy(&records[(first & ring.mask) + capacity],
               &records[first & ring.mask], count * sizeof(Record))
    ring.records = records
    ring.mask = 2 * capacity - 1
    return 0


cdef int ring_resize(Ring *ring, uint64_t capacity) noexcept nogil:
    """Move the retained records into a buffer of ``capacity`` records."""
    cdef uint64_t tail = ring.windows[ring.longest].head
    cdef uint64_t new_mask = capacity - 1
    cdef uint64_t seq
    cdef Record *records = <Record *> malloc(capacity * sizeof(Record))
    if records == NULL:
        return -1
    seq = tail
    while seq != ring.next:
        records[seq & new_mask] = ring.records[seq & ring.mask]
        seq += 1
    free(ring.records)
    ring.records = records
    ring.mask = new_mask
    return 0


cdef inline int64_t ring_clamp(Ring *ring, int64_t now) noexcept nogil:
    """Return the time a call happens at: never before the latest time seen.

    Time never runs backwards, so the log stays ordered under concurrent
    callers whose clock reads reach the mutex out of order.
    """
    if now < ring.latest:
        now = ring.latest
    ring.latest = now
    return now


cdef inline void window_evict(Ring *ring, WindowState *window,
                              int64_t now) noexcept nogil:
    """Drop from one window's sums the records that have aged out at ``now``."""
    cdef int64_t cutoff = now - window.duration
    cdef Record *record
    while window.head != ring.next:
        record = &ring.records[window.head & ring.mask]
        if record.ts > cutoff:
            break
        if record.tokens != RELEASED:
            window.sum[0] -= record.tokens
            window.sum[1] -= record.nanos
            window.sum[2] -= 1
        window.head += 1


cdef inline void ring_maybe_shrink(Ring *ring) noexcept nogil:
    cdef uint64_t capacity = ring.mask + 1
    if capacity > MIN_CAPACITY:
        if (ring.next - ring.windows[ring.longest].head) * 4 < capacity:
            # Failing to shrink only keeps the larger buffer.
            ring_resize(ring, capacity // 2)


cdef inline int64_t ring_advance(Ring *ring, int64_t now) noexcept nogil:
    """Evict what has aged out of every window; return the time used."""
    cdef Py_ssize_t i
    now = ring_clamp(ring, now)
    for i in range(ring.n_windows):
        window_evict(ring, &ring.windows[i], now)
    ring_maybe_shrink(ring)
    return now


cdef inline int window_problem_axis(WindowState *window, int64_t tokens,
                                    int64_t nanos) noexcept nogil:
    """Return the first axis that cannot take the request, or -1."""
    if tokens > window.cap[0] - window.sum[0]:
        return 0
    if nanos > window.cap[1] - window.sum[1]:
        return 1
    if 1 > window.cap[2] - window.sum[2]:
        return 2
    return -1


cdef int64_t ring_wait_ns(Ring *ring, int64_t tokens, int64_t nanos,
                          int64_t now) noexcept nogil:
    """Return ns until the request fits every window, or -1 for never.

    Walks each window's records from the oldest until enough has aged out.
    Uncapped axes have INT64_MAX caps and never need anything to age out.

    LIMITATION: the walk costs one step per record that must age out, inside
    the critical section: a refusal that needs half of a million-record window
    to leave holds the section for about half a millisecond. A bisection would
    need prefix sums in the records, which settle and release would then have
    to rewrite for every later record. See docs/semantics.md, Limitations.
    """
    cdef Py_ssize_t i
    cdef int axis
    cdef int64_t until = now
    cdef int64_t excess[3]
    cdef int64_t amount[3]
    cdef WindowState *window
    cdef Record *record
    cdef uint64_t seq

    amount[0] = tokens
    amount[1] = nanos
    amount[2] = 1
    for i in range(ring.n_windows):
        window = &ring.windows[i]
        for axis in range(3):
            if amount[axis] > window.cap[axis]:
                return -1
            # No overflow: sum and amount are below 2**63 and cap >= amount.
            excess[axis] = window.sum[axis] - (window.cap[axis] - amount[axis])
        if excess[0] <= 0 and excess[1] <= 0 and excess[2] <= 0:
            continue
        seq = window.head
        while seq != ring.next:
            record = &ring.records[seq & ring.mask]
            seq += 1
            if record.tokens == RELEASED:
                continue
            excess[0] -= record.tokens
            excess[1] -= record.nanos
            excess[2] -= 1
            if excess[0] <= 0 and excess[1] <= 0 and excess[2] <= 0:
                if record.ts + window.duration > until:
                    until = record.ts + window.duration
                break
    return until - now


cdef inline int ring_commit(Ring *ring, int64_t tokens, int64_t nanos,
                            int64_t now) noexcept nogil:
    """Append a record and add it to every window; -1 if out of memory."""
    cdef Py_ssize_t i
    cdef WindowState *window
    cdef Record *record
    cdef uint64_t capacity = ring.mask + 1
    if ring.next - ring.windows[ring.longest].head == capacity:
        if ring_grow(ring) != 0:
            return -1
    record = &ring.records[ring.next & ring.mask]
    record.ts = now
    record.tokens = tokens
    record.nanos = nanos
    ring.next += 1
    for i in range(ring.n_windows):
        window = &ring.windows[i]
        window.sum[0] += tokens
        window.sum[1] += nanos
        window.sum[2] += 1
    return 0


cdef inline int ring_admit(Ring *ring, int64_t tokens, int64_t nanos, int64_t now,
                           bint commit, Problem *problem,
                           uint64_t *seq) noexcept nogil:
    """The whole check-and-commit: OK, PROBLEM (filled in) or -1 (no memory).

    Each window is evicted and checked in one pass. After a breach the
    remaining windows are still evicted: every window must have evicted at
    the same time, so that the longest window's head is the oldest of all
    and marks the records the ring has to keep.
    """
    cdef Py_ssize_t i, j
    cdef int axis
    cdef WindowState *window
    now = ring_clamp(ring, now)
    for i in range(ring.n_windows):
        window = &ring.windows[i]
        window_evict(ring, window, now)
        axis = window_problem_axis(window, tokens, nanos)
        if axis >= 0:
            for j in range(i + 1, ring.n_windows):
                window_evict(ring, &ring.windows[j], now)
            problem.window = i
            problem.axis = axis
            problem.used = window.sum[axis]
            problem.wait_ns = ring_wait_ns(ring, tokens, nanos, now)
            return PROBLEM
    ring_maybe_shrink(ring)
    if commit:
        seq[0] = ring.next
        if ring_commit(ring, tokens, nanos, now) != 0:
            return -1
    return OK


cdef int ring_settle(Ring *ring, uint64_t seq, int64_t tokens, int64_t nanos,
                     Problem *problem) noexcept nogil:
    """Rewrite record ``seq`` in every window that holds it.

    Returns OK, or PROBLEM (window and axis filled in) when a sum would pass
    the int64 range, in which case nothing changes.
    """
    cdef Py_ssize_t i
    cdef WindowState *window
    cdef Record *record
    cdef int64_t delta_tokens, delta_nanos
    if seq < ring.windows[ring.longest].head:
        return OK
    record = &ring.records[seq & ring.mask]
    delta_tokens = tokens - record.tokens
    delta_nanos = nanos - record.nanos
    for i in range(ring.n_windows):
        window = &ring.windows[i]
        if window.head > seq:
            continue
        if delta_tokens > 0 and window.sum[0] > INT64_MAX - delta_tokens:
            problem.window = i
            problem.axis = 0
            return PROBLEM
        if delta_nanos > 0 and window.sum[1] > INT64_MAX - delta_nanos:
            problem.window = i
            problem.axis = 1
            return PROBLEM
    for i in range(ring.n_windows):
        window = &ring.windows[i]
        if window.head <= seq:
            window.sum[0] += delta_tokens
            window.sum[1] += delta_nanos
    record.tokens = tokens
    record.nanos = nanos
    return OK


cdef void ring_release(Ring *ring, uint64_t seq) noexcept nogil:
    """Void record ``seq`` in every window that holds it."""
    cdef Py_ssize_t i
    cdef WindowState *window
    cdef Record *record
    if seq < ring.windows[ring.longest].head:
        return
    record = &ring.records[seq & ring.mask]
    for i in range(ring.n_windows):
        window = &ring.windows[i]
        if window.head <= seq:
            window.sum[0] -= record.tokens
            window.sum[1] -= record.nanos
            window.sum[2] -= 1
    record.tokens = RELEASED
    record.nanos = 0


# -- argument conversion: C fast paths, the shared Python rules otherwise -------

cdef inline int64_t tokens_arg(object tokens) except? -1:
    cdef int overflow = 0
    cdef long long value
    if type(tokens) is int:
        value = PyLong_AsLongLongAndOverflow(tokens, &overflow)
        if overflow == 0 and 0 <= value < MAX_AMOUNT:
            return value
    return to_tokens(tokens)


cdef inline int64_t usd_arg(object usd) except? -1:
    cdef int overflow = 0
    cdef long long value
    cdef double x
    cdef int64_t nanos
    if type(usd) is float:
        x = PyFloat_AS_DOUBLE(usd)
        if x >= 0.0 and lbw_double_to_nanos(x, &nanos):
            return nanos
    elif type(usd) is int:
        value = PyLong_AsLongLongAndOverflow(usd, &overflow)
        if overflow == 0 and 0 <= value <= MAX_WHOLE_UNITS:
            return value * NANOS_PER_UNIT
    return usd_to_nanos(usd)


cdef inline int64_t seconds_arg(object seconds, str name) except? -1:
    cdef int overflow = 0
    cdef long long value
    cdef int64_t ns
    if type(seconds) is float:
        if lbw_double_to_nanos(PyFloat_AS_DOUBLE(seconds), &ns):
            return ns
    elif type(seconds) is int:
        value = PyLong_AsLongLongAndOverflow(seconds, &overflow)
        if overflow == 0 and -MAX_WHOLE_UNITS <= value <= MAX_WHOLE_UNITS:
            return value * NANOS_PER_UNIT
    return seconds_to_ns(seconds, name)


cdef inline object wait_from_ns(int64_t ns):
    if ns < 0:
        return float("inf")
    if ns < FLOAT_EXACT_NS:
        return <double> ns / 1e9
    return wait_to_seconds(ns)


cdef int raise_uninitialized(object budget) except -1:
    raise RuntimeError(
        f"{type(budget).__name__}.__init__ was never called, so the budget "
        "has no windows (a subclass must call super().__init__)"
    )


# -- the Python class -------------------------------------------------------------

cdef class BudgetWindows:
    """Admit a call only if it fits every cap of every window, then commit it.

    ``windows`` is one or more ``Window`` with unique names. ``clock`` is a
    callable returning seconds; by default the monotonic clock is read in
    nanoseconds (the same clock as ``time.monotonic_ns``). Every method is
    safe to call from many threads at once; the clock is never called while
    the internal mutex is held.
    """

    cdef Ring ring
    cdef cython.pymutex lock
    cdef bint release_gil
    cdef object clock
    cdef tuple _windows
    cdef tuple _capped
    cdef readonly object _queue

    def __cinit__(self, *args, **kwargs):
        self.ring.records = NULL
        self.ring.windows = NULL

    def __init__(self, windows, *, clock=None, _release_gil=False):
        cdef Py_ssize_t i
        cdef int64_t longest = -1
        cdef WindowState *state
        if clock is not None and not callable(clock):
            raise TypeError(
                f"clock must be callable or None, not {type(clock).__name__}"
            )
        if self.ring.windows != NULL:
            raise RuntimeError("BudgetWindows.__init__ may be called only once")
        windows = validate_windows(windows)
        if ring_init(&self.ring, len(windows)) != 0:
            raise MemoryError()
        for i, window in enumerate(windows):
            state = &self.ring.windows[i]
            state.duration = window.duration_ns
            state.cap[0] = INT64_MAX if window.token_cap is None else window.token_cap
            state.cap[1] = (
                INT64_MAX if window.usd_cap_nanos is None else window.usd_cap_nanos
            )
            state.cap[2] = (
                INT64_MAX if window.request_cap is None else window.request_cap
            )
            state.head = 0
            state.sum[0] = state.sum[1] = state.sum[2] = 0
            if state.duration > longest:
                longest = state.duration
                self.ring.longest = i
        self._windows = windows
        self._capped = tuple(
            (w.token_cap is not None, w.usd_cap_nanos is not None,
             w.request_cap is not None)
            for w in windows
        )
        self.clock = clock
        self.release_gil = bool(_release_gil)
        self._queue = WaitQueue()

    def __dealloc__(self):
        free(self.ring.records)
        free(self.ring.windows)

    @property
    def windows(self):
        """The windows, in declaration order."""
        return self._windows

    def __repr__(self):
        return f"BudgetWindows({list(self._windows)!r})"

    # -- steps --------------------------------------------------------------

    cdef int64_t _now(self, object now) except? -1:
        # Every operation that takes a time reads it first, so this is where a
        # budget whose __init__ never ran is stopped before the ring is used:
        # one pointer test on the hot path, the error built only when it fails.
        if self.ring.windows == NULL:
            raise_uninitialized(self)
        if now is None:
            if self.clock is None:
                return monotonic_ns()
            return seconds_arg(self.clock(), "clock()")
        return seconds_arg(now, "now")

    cdef int _admit(self, int64_t tokens, int64_t nanos, int64_t now, bint commit,
                    Problem *problem, uint64_t *seq) except -1:
        cdef int rc
        if self.release_gil:
            with nogil:
                with self.lock:
                    rc = ring_admit(&self.ring, tokens, nanos, now, commit, problem,
                                    seq)
        elif GIL_SERIALIZES:
            # The GIL is held from here to the end of the section (see _gil.h).
            rc = ring_admit(&self.ring, tokens, nanos, now, commit, problem, seq)
        else:
            with self.lock:
                rc = ring_admit(&self.ring, tokens, nanos, now, commit, problem, seq)
        if rc < 0:
            raise MemoryError("could not grow the ring of records")
        return rc

    cdef object _problem_result(self, Problem *problem, int64_t tokens,
                                int64_t nanos):
        window = self._windows[problem.window]
        if not self._capped[problem.window][problem.axis]:
            raise overflow_error(window, problem.axis)
        if problem.axis == 0:
            requested = tokens
        elif problem.axis == 1:
            requested = nanos
        else:
            requested = 1
        return make_breach(window, problem.axis, problem.used, requested,
                           problem.wait_ns)

    # -- the public operations ----------------------------------------------

    def try_record(self, tokens, usd=0, *, now=None):
        """Record a call if it fits every window; else return the first Breach.

        ``tokens`` is an int, ``usd`` dollars, ``now`` seconds (for tests and
        replays; by default the clock is read). Nothing is committed when a
        Breach is returned or an exception is raised.
        """
        cdef Problem problem
        cdef uint64_t seq
        cdef int64_t tok = tokens_arg(tokens)
        cdef int64_t nanos = usd_arg(usd)
        cdef int64_t at = self._now(now)
        if self._admit(tok, nanos, at, True, &problem, &seq) == OK:
            return None
        return self._problem_result(&problem, tok, nanos)

    def record(self, tokens, usd=0, *, now=None):
        """Record a call in every window, or raise WindowBreached and record nothing."""
        cdef Problem problem
        cdef uint64_t seq
        cdef int64_t tok = tokens_arg(tokens)
        cdef int64_t nanos = usd_arg(usd)
        cdef int64_t at = self._now(now)
        if self._admit(tok, nanos, at, True, &problem, &seq) == OK:
            return None
        raise WindowBreached(self._problem_result(&problem, tok, nanos))

    def check(self, tokens, usd=0, *, now=None):
        """Return the Breach a call would cause, or None if it fits; commit nothing."""
        cdef Problem problem
        cdef uint64_t seq
        cdef int64_t tok = tokens_arg(tokens)
        cdef int64_t nanos = usd_arg(usd)
        cdef int64_t at = self._now(now)
        if self._admit(tok, nanos, at, False, &problem, &seq) == OK:
            return None
        return self._problem_result(&problem, tok, nanos)

    def retry_after(self, tokens, usd=0, *, now=None):
        """Return seconds until a call would fit: 0.0 if now, ``inf`` if never.

        Assumes nothing else is recorded meanwhile. Commits nothing.
        """
        cdef int64_t tok = tokens_arg(tokens)
        cdef int64_t nanos = usd_arg(usd)
        cdef int64_t at = self._now(now)
        cdef int64_t wait
        with self.lock:
            at = ring_advance(&self.ring, at)
            wait = ring_wait_ns(&self.ring, tok, nanos, at)
        return wait_from_ns(wait)

    def snapshot(self, *, now=None):
        """Return each window's use, in declaration order."""
        cdef int64_t at = self._now(now)
        cdef Py_ssize_t i, n = self.ring.n_windows
        cdef int64_t *sums = <int64_t *> malloc(3 * n * sizeof(int64_t))
        if sums == NULL:
            raise MemoryError()
        try:
            with self.lock:
                ring_advance(&self.ring, at)
                for i in range(n):
                    sums[3 * i] = self.ring.windows[i].sum[0]
                    sums[3 * i + 1] = self.ring.windows[i].sum[1]
                    sums[3 * i + 2] = self.ring.windows[i].sum[2]
            return [
                make_snapshot(self._windows[i], sums[3 * i], sums[3 * i + 1],
                              sums[3 * i + 2])
                for i in range(n)
            ]
        finally:
            free(sums)

    def reset(self):
        """Forget every record and the latest time seen, in every window."""
        if self.ring.windows == NULL:
            raise_uninitialized(self)
        with self.lock:
            ring_clear(&self.ring)
        self._queue.poke()

    # -- reservations -------------------------------------------------------

    def reserve(self, tokens, usd=0, *, now=None):
        """Count an estimated call now; settle or release it later.

        Admitted exactly like ``record``: raises WindowBreached and commits
        nothing if the estimate does not fit.
        """
        cdef Problem problem
        cdef uint64_t seq
        cdef int64_t tok = tokens_arg(tokens)
        cdef int64_t nanos = usd_arg(usd)
        cdef int64_t at = self._now(now)
        if self._admit(tok, nanos, at, True, &problem, &seq) == OK:
            return Reservation(self, seq, tok, nanos)
        raise WindowBreached(self._problem_result(&problem, tok, nanos))

    def _settle(self, uint64_t seq, int64_t tokens, int64_t nanos):
        cdef Problem problem
        cdef int rc
        if self.ring.windows == NULL:
            raise_uninitialized(self)
        with self.lock:
            rc = ring_settle(&self.ring, seq, tokens, nanos, &problem)
        if rc == PROBLEM:
            raise overflow_error(self._windows[problem.window], problem.axis)
        self._queue.poke()

    def _release(self, uint64_t seq):
        if self.ring.windows == NULL:
            raise_uninitialized(self)
        with self.lock:
            ring_release(&self.ring, seq)
        self._queue.poke()

    # -- waiting ------------------------------------------------------------

    def record_wait(self, tokens, usd=0, *, timeout=None):
        """Block until the call fits, then record it.

        Waiters are served first in, first out. Raises WindowBreached at once
        if the call can never fit, and WaitTimeout (a TimeoutError) at once if
        the wait it needs is longer than what is left of ``timeout`` seconds.
        """
        record_wait(self, tokens, usd, timeout)

    def reserve_wait(self, tokens, usd=0, *, timeout=None):
        """Block until the estimate fits, then reserve it (see ``record_wait``)."""
        return reserve_wait(self, tokens, usd, timeout)

    def arecord(self, tokens, usd=0, *, timeout=None):
        """Wait without blocking the event loop, then record (see ``record_wait``).

        Returns a coroutine.
        """
        return arecord(self, tokens, usd, timeout)

    def areserve(self, tokens, usd=0, *, timeout=None):
        """Wait without blocking the event loop, then reserve.

        Use as ``async with budget.areserve(...) as reservation:`` or
        ``reservation = await budget.areserve(...)``.
        """
        return AsyncReservation(self, tokens, usd, timeout)

    def _allocated_bytes(self):
        """Return the bytes the ring and window states hold (for benchmarks)."""
        if self.ring.windows == NULL:
            raise_uninitialized(self)
        with self.lock:
            return ((self.ring.mask + 1) * sizeof(Record)
                    + self.ring.n_windows * sizeof(WindowState))
