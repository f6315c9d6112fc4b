/* Whether holding the GIL already serializes a critical section.
 *
 * On a build with a GIL, code that keeps the GIL from start to end of its
 * critical section and calls no Python code inside it cannot interleave with
 * any other such section, so the mutex is redundant there. On CPython 3.10 to
 * 3.12 the mutex Cython offers is a PyThread lock whose uncontended acquire
 * and release cost more instructions than the whole check-and-commit, so the
 * GIL-holding path skips it. Free-threaded builds always take the mutex.
 */
#ifndef LBW_GIL_H
#define LBW_GIL_H

#ifdef Py_GIL_DISABLED
#define LBW_GIL_SERIALIZES 0
#else
#define LBW_GIL_SERIALIZES 1
#endif

#endif /* LBW_GIL_H */
