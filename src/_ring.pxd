"""The C layout of the ring of records and its window states."""

from libc.stdint cimport int64_t, uint64_t


cdef extern from "_nanos.h" nogil:
    int lbw_double_to_nanos(double x, int64_t *out)


cdef struct Record:
    int64_t ts          # nanoseconds
    int64_t tokens      # RELEASED marks a record that counts as nothing
    int64_t nanos       # nano-dollars


cdef struct WindowState:
    int64_t duration    # nanoseconds
    int64_t cap[3]      # tokens, nano-dollars, requests; INT64_MAX if uncapped
    int64_t sum[3]
    uint64_t head       # sequence number of the oldest record in the window


cdef struct Ring:
    Record *records     # record number s lives at records[s & mask]
    uint64_t mask       # capacity - 1; the capacity is a power of two
    uint64_t next       # sequence number of the next record
    int64_t latest      # latest time seen, nanoseconds
    Py_ssize_t n_windows
    Py_ssize_t longest  # index of the window whose head is the oldest
    WindowState *windows


cdef struct Problem:
    Py_ssize_t window
    int axis            # 0 tokens, 1 USD, 2 requests
    int64_t used
    int64_t wait_ns     # -1: the request can never fit


cdef extern from "_gil.h":
    const bint GIL_SERIALIZES "LBW_GIL_SERIALIZES"
