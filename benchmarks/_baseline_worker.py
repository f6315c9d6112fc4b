"""Time the workload on another installed llm-budget-window, in its own process.

Run by ``compare.py`` as ``python _baseline_worker.py INSTALL_DIR``, with
INSTALL_DIR first on ``sys.path`` so that ``llm_budget_window`` is the copy
installed there (for example 0.1.0 from PyPI). It reads one command a line on
stdin and answers one line on stdout, so that its batches interleave with the
other contenders' in the parent:

- ``info`` -> ``ok VERSION FILE``
- ``loop N`` / ``record N`` / ``evict N`` -> ``ok NANOSECONDS`` for N calls, in
  CPU time of the thread (as in the parent)
- anything failing -> ``error MESSAGE``
"""

from __future__ import annotations

import sys
import time
import traceback

USD_PER_TOKEN = 3e-6
EVICTING_STEP = 50e-6
EVICTING_PREFILL = 110_000


def main() -> None:
    """Serve timing commands until stdin closes."""
    install_dir = sys.argv[1]
    sys.path.insert(0, install_dir)
    workload_dir = sys.argv[2]
    sys.path.append(workload_dir)
    import workload

    import llm_budget_window

    pairs = workload.tokens_and_usd()
    evicting = None
    evicting_calls = 0

    def calls(n: int) -> list[tuple[int, float]]:
        return (pairs * (n // len(pairs) + 1))[:n]

    def make_budget(durations: tuple[float, ...]) -> object:
        window = llm_budget_window.Window
        return llm_budget_window.BudgetWindows(
            [
                window("a", durations[0], token_cap=10**15, usd_cap=10**6),
                window("b", durations[1], usd_cap=10**7),
                window("c", durations[2], usd_cap=10**8),
            ]
        )

    def run_evicting(n: int) -> int:
        nonlocal evicting, evicting_calls
        if evicting is None:
            evicting = make_budget((0.05, 0.5, 5))
            record = evicting.record  # type: ignore[attr-defined]
            for i, (tokens, usd) in enumerate(calls(EVICTING_PREFILL)):
                record(tokens, usd, now=1000.0 + i * EVICTING_STEP)
            evicting_calls = EVICTING_PREFILL
        record = evicting.record  # type: ignore[attr-defined]
        base = evicting_calls
        times = [1000.0 + (base + i) * EVICTING_STEP for i in range(n)]
        work = list(zip(calls(n), times, strict=True))
        evicting_calls += n
        start = time.thread_time_ns()
        for (tokens, usd), at in work:
            record(tokens, usd, now=at)
        return time.thread_time_ns() - start

    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        try:
            if command == "info":
                version = getattr(llm_budget_window, "__version__", "unknown")
                answer = f"{version} {llm_budget_window.__file__}"
            elif command == "loop":
                work = calls(int(argument))
                start = time.thread_time_ns()
                for _tokens, _usd in work:
                    pass
                answer = str(time.thread_time_ns() - start)
            elif command == "loop_now":
                count = int(argument)
                stream = list(zip(calls(count), range(count), strict=True))
                start = time.thread_time_ns()
                for (_tokens, _usd), _at in stream:
                    pass
                answer = str(time.thread_time_ns() - start)
            elif command == "record":
                work = calls(int(argument))
                record = make_budget((60, 3600, 86_400)).record  # type: ignore[attr-defined]
                start = time.thread_time_ns()
                for tokens, usd in work:
                    record(tokens, usd)
                answer = str(time.thread_time_ns() - start)
            elif command == "evict":
                answer = str(run_evicting(int(argument)))
            else:
                raise ValueError(f"unknown command {command!r}")
            print("ok", answer, flush=True)
        except Exception as error:  # reported to the parent, which skips the row
            detail = traceback.format_exception_only(type(error), error)[-1].strip()
            print("error", detail, flush=True)


if __name__ == "__main__":
    main()
