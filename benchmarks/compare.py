"""Measure llm-budget-window against its floor and its peers, in one run.

    python benchmarks/compare.py --plot docs/benchmarks.png

prints, as Markdown tables:

- ns per ``record`` call with 3 windows (60 s, 1 h, 1 d) for the floor (a
  compiled call plus one monotonic clock read), the compiled core, the
  pure-Python twin, llm-budget-window 0.1.0 from PyPI (in a subprocess with its
  own install path), ``limits`` (moving window, memory storage, three limits)
  and ``pyrate-limiter`` (in-memory bucket, three rates);
- the same in a steady state where every call evicts (0.05 s, 0.5 s, 5 s);
- 1, 2 and 8 threads on one object: calls/s and p50/p99/p99.9 latency for the
  compiled core holding the GIL, the compiled core releasing it, and the twin;
- bytes per retained record at 100k, 1M and 3M records;
- the replay command's speed, parsing and budget loop apart.

Times are medians of repeats that interleave every contender in a shuffled
order, so that the load of a shared machine falls on all of them alike. They
are CPU time of the timing thread (the thread section excepted, which is
about wall-clock time), so time the scheduler gives other processes is not
counted. The cost of the benchmark loop itself is measured in the same
batches and subtracted. A peer that is not installed is reported as skipped.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import workload
from _floor_build import build_floor

import llm_budget_window
from llm_budget_window._budget_py import BudgetWindows as TwinBudget

HERE = Path(__file__).resolve().parent

try:
    from llm_budget_window._budget_c import BudgetWindows as CompiledBudget
except ImportError:
    CompiledBudget = None

perf_counter_ns = time.perf_counter_ns

#: The clock of every single-threaded timing: CPU time of the calling thread,
#: so that time the scheduler gives other processes of a shared machine is
#: not counted (their effect on the caches still is).
cpu_ns = time.thread_time_ns

#: Bytes of one record in the core's ring: timestamp, tokens, nano-dollars.
RECORD_BYTES = 24

Pair = tuple[int, float]


# -- timing loops ---------------------------------------------------------------


def time_loop(work: Sequence[Pair]) -> int:
    """Return ns for the bare loop that every batch runs around its calls."""
    start = cpu_ns()
    for tokens, usd in work:  # noqa: B007 (the loop alone is the measurement)
        pass
    return cpu_ns() - start


def time_calls(method: Callable[..., Any], work: Sequence[Pair]) -> int:
    """Return ns for ``method(tokens, usd)`` over every pair of ``work``."""
    start = cpu_ns()
    for tokens, usd in work:
        method(tokens, usd)
    return cpu_ns() - start


def time_loop_now(work: Sequence[tuple[Pair, float]]) -> int:
    """Return ns for the bare loop of the calls that pass ``now``."""
    start = cpu_ns()
    for (tokens, usd), at in work:  # noqa: B007 (the loop alone is the measurement)
        pass
    return cpu_ns() - start


def time_calls_now(
    method: Callable[..., Any], work: Sequence[tuple[Pair, float]]
) -> int:
    """Return ns for ``method(tokens, usd, now=at)`` over ``work``."""
    start = cpu_ns()
    for (tokens, usd), at in work:
        method(tokens, usd, now=at)
    return cpu_ns() - start


def cycle(pairs: list[Pair], n: int) -> list[Pair]:
    """Return the first ``n`` pairs of ``pairs`` repeated."""
    return (pairs * (n // len(pairs) + 1))[:n]


# -- contenders ---------------------------------------------------------------


@dataclass
class Contender:
    """One row of a table: how to time a batch, or why it is skipped.

    ``batch(n)`` returns (ns for n calls, ns for the same loop without the
    calls), both measured in the process and the repeat that ran the calls.
    ``ratios`` are each batch's ns per call over that of the floor batch run
    just before it.
    """

    name: str
    batch: Callable[[int], tuple[int, int]] | None = None
    skipped: str = ""
    samples: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)


def interleave(contenders: list[Contender], calls: int, repeats: int) -> None:
    """Fill every contender's ``samples`` (net ns per call) and ``ratios``.

    The first contender is the floor. Every other batch runs right after a
    batch of the floor, and its ratio to the floor is taken against that
    neighbour, so that a change in the machine's load between batches
    cancels out of the ratio. The loop's cost subtracted is the median over
    all of a contender's batches, so that one preempted loop timing cannot
    make a sample negative.
    """
    floor = contenders[0]
    assert floor.batch is not None
    others = [c for c in contenders[1:] if c.batch is not None]
    elapsed: dict[str, list[int]] = {c.name: [] for c in [floor, *others]}
    loops: dict[str, list[int]] = {c.name: [] for c in [floor, *others]}
    neighbour: dict[str, list[int]] = {c.name: [] for c in others}
    rng = random.Random(7)
    for _ in range(repeats):
        rng.shuffle(others)
        for contender in others:
            assert contender.batch is not None
            gc.collect()
            for runner in (floor, contender):
                assert runner.batch is not None
                batch_ns, loop_ns = runner.batch(calls)
                elapsed[runner.name].append(batch_ns)
                loops[runner.name].append(loop_ns)
            neighbour[contender.name].append(len(elapsed[floor.name]) - 1)
    for contender in [floor, *others]:
        loop = statistics.median(loops[contender.name])
        contender.samples = [(e - loop) / calls for e in elapsed[contender.name]]
    floor.ratios = [1.0]
    for contender in others:
        contender.ratios = [
            own / floor.samples[k]
            for own, k in zip(contender.samples, neighbour[contender.name], strict=True)
            if floor.samples[k] > 0
        ]


def fresh_batch(
    make: Callable[[], Callable[..., Any]],
    pairs: list[Pair],
    close: Callable[[Any], None] | None = None,
) -> Callable[[int], tuple[int, int]]:
    """Return a batch that times calls on a new object made by ``make``."""

    def batch(n: int) -> tuple[int, int]:
        work = cycle(pairs, n)
        method = make()
        loop = time_loop(work)
        elapsed = time_calls(method, work)
        if close is not None:
            close(method)
        return elapsed, loop

    return batch


def stream_batch(
    method: Callable[..., Any], pairs: list[Pair], prefill: int
) -> Callable[[int], tuple[int, int]]:
    """Return a batch that continues one time stream on one object via ``now``.

    The object first takes ``prefill`` calls, so that timing starts in a
    steady state; every batch goes on where the previous one stopped.
    """
    done = 0

    def advance(n: int) -> list[tuple[Pair, float]]:
        nonlocal done
        times = [1000.0 + (done + i) * workload.EVICTING_STEP for i in range(n)]
        done += n
        return list(zip(cycle(pairs, n), times, strict=True))

    for (tokens, usd), at in advance(prefill):
        method(tokens, usd, now=at)

    def batch(n: int) -> tuple[int, int]:
        work = advance(n)
        loop = time_loop_now(work)
        return time_calls_now(method, work), loop

    return batch


class BaselineProcess:
    """Another installed llm-budget-window, timed in its own process."""

    def __init__(self, install_dir: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "_baseline_worker.py"),
                str(install_dir),
                str(HERE),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tempfile.gettempdir(),
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )

    def ask(self, command: str) -> str:
        """Send one command; return the answer or raise RuntimeError."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        status, _, answer = self.process.stdout.readline().strip().partition(" ")
        if status != "ok":
            raise RuntimeError(answer or "the worker exited")
        return answer

    def batch(self, command: str, loop: str) -> Callable[[int], tuple[int, int]]:
        """Return a batch that runs ``command N`` and ``loop N`` in the worker."""

        def run(n: int) -> tuple[int, int]:
            return int(self.ask(f"{command} {n}")), int(self.ask(f"{loop} {n}"))

        return run

    def close(self) -> None:
        """Stop the worker."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def install_baseline(spec: str) -> tuple[Path | None, str]:
    """Install ``spec`` with ``pip install --target`` into a cache directory.

    Returns (the install directory, "") or (None, why it could not be done).
    """
    name = spec.replace("=", "-").replace(">", "").replace("<", "")
    target = Path(tempfile.gettempdir()) / f"llm-budget-window-bench-{name}"
    if (target / "llm_budget_window").is_dir():
        return target, ""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(target),
            spec,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        last = lines[-1].removeprefix("ERROR: ") if lines else "no message"
        return None, f"`pip install {spec}` failed: {last}"
    return target, ""


def start_baseline(args: argparse.Namespace) -> tuple[BaselineProcess | None, str]:
    """Start the worker for the PyPI baseline, or say why it is skipped."""
    if args.baseline_path is not None:
        install_dir: Path | None = Path(args.baseline_path)
        why = ""
    else:
        install_dir, why = install_baseline(args.baseline)
    if install_dir is None:
        return None, why
    worker = BaselineProcess(install_dir)
    try:
        version, _, location = worker.ask("info").partition(" ")
        if not location.startswith(str(install_dir)):
            worker.close()
            return None, f"imported {location}, not the copy in the install path"
        worker.ask("record 1000")
    except RuntimeError as error:
        worker.close()
        return None, f"the installed package failed the workload: {error}"
    return worker, version


def peer_version(distribution: str) -> str:
    """Return the installed version of ``distribution``, or "" if missing."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def limits_contender(pairs: list[Pair]) -> Contender:
    """``limits``: moving window, memory storage, three limits, cost 1 a call."""
    name = f"limits {peer_version('limits')} (moving window, 3 limits)"
    try:
        from limits import (
            RateLimitItemPerDay,
            RateLimitItemPerHour,
            RateLimitItemPerMinute,
            storage,
            strategies,
        )
    except ImportError:
        return Contender("limits", skipped="not installed (pip install limits)")
    items = [
        RateLimitItemPerMinute(10**9),
        RateLimitItemPerHour(10**10),
        RateLimitItemPerDay(10**11),
    ]

    def make() -> Callable[[int, float], bool]:
        hit = strategies.MovingWindowRateLimiter(storage.MemoryStorage()).hit

        def call(tokens: int, usd: float) -> bool:
            # Each limit is its own key in limits: a call hits all three.
            return (
                hit(items[0], "user")
                and hit(items[1], "user")
                and hit(items[2], "user")
            )

        return call

    return Contender(name, fresh_batch(make, pairs))


def pyrate_rates(durations_ms: Iterable[int]) -> list[Any]:
    """Return pyrate-limiter rates with caps no benchmark reaches."""
    from pyrate_limiter import Rate

    return [Rate(10**9 * 10**k, duration) for k, duration in enumerate(durations_ms)]


def pyrate_contender(pairs: list[Pair]) -> Contender:
    """``pyrate-limiter``: in-memory bucket, three rates, weight 1 a call."""
    version = peer_version("pyrate-limiter")
    try:
        from pyrate_limiter import Duration, Limiter
    except ImportError:
        return Contender(
            "pyrate-limiter", skipped="not installed (pip install pyrate-limiter)"
        )
    durations = [Duration.MINUTE, Duration.HOUR, Duration.DAY]

    def make() -> Callable[[int, float], bool]:
        limiter = Limiter(pyrate_rates(durations))
        acquire = limiter.try_acquire

        def call(tokens: int, usd: float) -> bool:
            return acquire("user", 1)

        call.limiter = limiter  # type: ignore[attr-defined]
        return call

    def close(call: Any) -> None:
        call.limiter.close()

    return Contender(
        f"pyrate-limiter {version} (in-memory, 3 rates)",
        fresh_batch(make, pairs, close),
    )


def pyrate_evicting_contender(pairs: list[Pair], warmup_s: float) -> Contender:
    """pyrate-limiter with 50 ms, 500 ms and 5 s rates, on its own clock.

    It takes no caller time, so it runs on the real clock, warmed for longer
    than its longest window before timing starts.
    """
    version = peer_version("pyrate-limiter")
    try:
        from pyrate_limiter import Limiter
    except ImportError:
        return Contender(
            "pyrate-limiter", skipped="not installed (pip install pyrate-limiter)"
        )
    limiter = Limiter(pyrate_rates([50, 500, 5000]))
    acquire = limiter.try_acquire

    def call(tokens: int, usd: float) -> bool:
        return acquire("user", 1)

    deadline = time.monotonic() + warmup_s
    while time.monotonic() < deadline:
        time_calls(call, pairs)

    def batch(n: int) -> tuple[int, int]:
        work = cycle(pairs, n)
        loop = time_loop(work)
        return time_calls(call, work), loop

    return Contender(
        f"pyrate-limiter {version} (real clock, warmed {warmup_s:g} s)", batch
    )


# -- tables ---------------------------------------------------------------


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Return a Markdown table, numbers right-aligned."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def speed_table(contenders: list[Contender], floor: str, core: str) -> str:
    """Return the ns-per-call table with ratios to the floor and the core."""

    def median_of(name: str) -> float | None:
        for contender in contenders:
            if contender.name == name and contender.samples:
                return statistics.median(contender.samples)
        return None

    floor_ns = median_of(floor)
    core_ns = median_of(core)
    rows = []
    for contender in contenders:
        if not contender.samples:
            rows.append(
                [contender.name, "skipped: " + contender.skipped, "", "", "", "", ""]
            )
            continue
        median = statistics.median(contender.samples)
        rows.append(
            [
                contender.name,
                f"{median:,.1f}",
                f"{min(contender.samples):,.1f}",
                f"{max(contender.samples):,.1f}",
                f"{median / floor_ns:,.2f}" if floor_ns else "",
                f"{statistics.median(contender.ratios):,.2f}"
                if contender.ratios
                else "",
                f"{median / core_ns:,.2f}" if core_ns else "",
            ]
        )
    return markdown_table(
        [
            "implementation",
            "ns/call (median)",
            "min",
            "max",
            "x floor",
            "x floor (paired)",
            "x compiled",
        ],
        rows,
    )


# -- the sections ---------------------------------------------------------------


def section_speed(args: argparse.Namespace, floor_module: Any) -> dict[str, Any]:
    """Time the steady workload and the evicting one; print both tables."""
    pairs = workload.tokens_and_usd()
    baseline, baseline_info = start_baseline(args)
    baseline_name = f"llm-budget-window {args.baseline.partition('==')[2] or '?'}"
    if baseline is not None:
        baseline_name = f"llm-budget-window {baseline_info} (PyPI, subprocess)"

    steady = [
        Contender(
            "floor (compiled call + clock read)",
            fresh_batch(lambda: floor_module.Floor().record, pairs),
        ),
    ]
    if CompiledBudget is not None:
        steady.append(
            Contender(
                "compiled core",
                fresh_batch(lambda: CompiledBudget(workload.windows()).record, pairs),
            )
        )
    else:
        steady.append(Contender("compiled core", skipped="not built"))
    steady.append(
        Contender(
            "pure-Python twin",
            fresh_batch(lambda: TwinBudget(workload.windows()).record, pairs),
        )
    )
    if baseline is not None:
        steady.append(Contender(baseline_name, baseline.batch("record", "loop")))
    else:
        steady.append(Contender(baseline_name, skipped=baseline_info))
    steady.append(limits_contender(pairs))
    steady.append(pyrate_contender(pairs))

    print(
        f"\n## record, 3 windows (60 s, 1 h, 1 d): {args.calls:,} calls a batch, "
        f"{args.repeats} interleaved repeats\n"
    )
    interleave(steady, args.calls, args.repeats)
    floor_name, core_name = steady[0].name, steady[1].name
    print(speed_table(steady, floor_name, core_name))

    evicting = [
        Contender(
            "floor (compiled call + clock read), now=",
            stream_batch(floor_module.Floor().record, pairs, 0),
        ),
    ]
    if CompiledBudget is not None:
        evicting.append(
            Contender(
                "compiled core, evicting",
                stream_batch(
                    CompiledBudget(workload.evicting_windows()).record,
                    pairs,
                    workload.EVICTING_PREFILL,
                ),
            )
        )
        evicting.append(
            Contender(
                "compiled core, same calls, 60 s/1 h/1 d (no eviction)",
                stream_batch(
                    CompiledBudget(workload.windows()).record,
                    pairs,
                    workload.EVICTING_PREFILL,
                ),
            )
        )
    else:
        evicting.append(Contender("compiled core, evicting", skipped="not built"))
    evicting.append(
        Contender(
            "pure-Python twin, evicting",
            stream_batch(
                TwinBudget(workload.evicting_windows()).record,
                pairs,
                workload.EVICTING_PREFILL,
            ),
        )
    )
    if baseline is not None:
        evicting.append(
            Contender(baseline_name + ", evicting", baseline.batch("evict", "loop_now"))
        )
    else:
        evicting.append(Contender(baseline_name, skipped=baseline_info))
    evicting.append(
        Contender(
            "limits (moving window)",
            skipped="cannot express windows under 1 s (whole-second granularity)",
        )
    )
    evicting.append(pyrate_evicting_contender(pairs, args.pyrate_warmup))

    print(
        f"\n## record, evicting: windows 0.05 s, 0.5 s, 5 s; time advances "
        f"{workload.EVICTING_STEP * 1e6:g} us a call (passed as now=), "
        f"{workload.EVICTING_PREFILL:,} calls of warm-up\n"
    )
    interleave(evicting, args.calls, args.repeats)
    print(speed_table(evicting, evicting[0].name, evicting[1].name))
    print(
        "\nEvery row passes now= except pyrate-limiter, which has no caller "
        "time and runs on its own clock."
    )
    if baseline is not None:
        baseline.close()
    return {"steady": steady, "evicting": evicting}


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Return the value at ``fraction`` (0..1) of a sorted sequence."""
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def run_threads(
    budget: Any, threads: int, calls: int, pairs: list[Pair], timed: bool
) -> tuple[float, float, list[int]]:
    """Hammer ``budget.try_record`` from ``threads`` threads at once.

    The ``calls`` are shared out evenly, so that every thread count does the
    same work and leaves the ring the same size. Returns (wall-clock seconds
    from the common start to the last finish, CPU seconds of the process over
    the same span, the latency of every call in ns if ``timed``, else an empty
    list).
    """
    barrier = threading.Barrier(threads + 1)
    latencies: list[list[int]] = [[] for _ in range(threads)]
    work = cycle(pairs, calls // threads)

    def hammer(slot: int) -> None:
        try_record = budget.try_record
        barrier.wait()
        if timed:
            out = latencies[slot]
            append = out.append
            for tokens, usd in work:
                start = perf_counter_ns()
                try_record(tokens, usd)
                append(perf_counter_ns() - start)
        else:
            for tokens, usd in work:
                try_record(tokens, usd)

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = perf_counter_ns()
    start_cpu = time.process_time_ns()
    for worker in workers:
        worker.join()
    cpu = (time.process_time_ns() - start_cpu) / 1e9
    wall = (perf_counter_ns() - start) / 1e9
    return wall, cpu, sorted(x for slot in latencies for x in slot)


def timer_overhead_ns() -> int:
    """Return the median ns of two back-to-back ``perf_counter_ns`` reads."""
    samples = []
    for _ in range(100_000):
        start = perf_counter_ns()
        samples.append(perf_counter_ns() - start)
    return int(statistics.median(samples))


def section_threads(args: argparse.Namespace) -> dict[str, Any]:
    """Print calls/s and latency percentiles for 1, 2 and 8 threads."""
    pairs = workload.tokens_and_usd()
    configs: list[tuple[str, Callable[[], Any] | None, int]] = []
    if CompiledBudget is not None:
        configs.append(
            (
                "compiled, GIL held",
                lambda: CompiledBudget(workload.windows()),
                args.thread_calls,
            )
        )
        configs.append(
            (
                "compiled, GIL released",
                lambda: CompiledBudget(workload.windows(), _release_gil=True),
                args.thread_calls,
            )
        )
    else:
        configs.append(("compiled", None, 0))
    configs.append(
        (
            "pure-Python twin",
            lambda: TwinBudget(workload.windows()),
            max(1000, args.thread_calls // 10),
        )
    )
    thread_counts = [1, 2, 8]
    throughput: dict[tuple[str, int], list[float]] = {}
    per_cpu: dict[tuple[str, int], list[float]] = {}
    latency: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    jobs = [
        (name, make, calls, n)
        for name, make, calls in configs
        if make is not None
        for n in thread_counts
    ]
    rng = random.Random(11)
    for _ in range(args.thread_repeats):
        rng.shuffle(jobs)
        for name, make, calls, n in jobs:
            gc.collect()
            wall, cpu, _ = run_threads(make(), n, calls, pairs, timed=False)
            throughput.setdefault((name, n), []).append(calls // n * n / wall)
            per_cpu.setdefault((name, n), []).append(calls // n * n / cpu)
            gc.collect()
            _, _, lat = run_threads(make(), n, calls, pairs, timed=True)
            latency.setdefault((name, n), []).append(
                (percentile(lat, 0.5), percentile(lat, 0.99), percentile(lat, 0.999))
            )

    overhead = timer_overhead_ns()
    print(
        f"\n## threads: try_record on one object, {args.thread_calls:,} calls a "
        f"run shared out among the threads (twin: a tenth), median of "
        f"{args.thread_repeats} interleaved repeats\n"
    )
    rows = []
    single: dict[str, tuple[float, float]] = {}
    for name, make, _ in configs:
        if make is None:
            rows.append([name, "skipped: not built", "", "", "", "", "", "", ""])
            continue
        for n in thread_counts:
            rate = statistics.median(throughput[(name, n)])
            cpu_rate = statistics.median(per_cpu[(name, n)])
            if n == 1:
                single[name] = (rate, cpu_rate)
            p50, p99, p999 = (
                int(statistics.median(x[k] for x in latency[(name, n)]))
                for k in range(3)
            )
            rows.append(
                [
                    name,
                    str(n),
                    f"{rate:,.0f}",
                    f"{rate / single[name][0]:.2f}",
                    f"{cpu_rate:,.0f}",
                    f"{cpu_rate / single[name][1]:.2f}",
                    f"{p50:,}",
                    f"{p99:,}",
                    f"{p999:,}",
                ]
            )
    print(
        markdown_table(
            [
                "implementation",
                "threads",
                "calls/s",
                "x 1 thread",
                "calls/CPU-s",
                "x 1 thread (CPU)",
                "p50 ns",
                "p99 ns",
                "p99.9 ns",
            ],
            rows,
        )
    )
    print(
        f"\ncalls/s is wall-clock; calls/CPU-s divides by the CPU time the "
        f"process used, which time taken by other processes does not inflate. "
        f"Latencies include one timer read pair: {overhead} ns here "
        f"(two back-to-back perf_counter_ns calls). "
        f"sys.getswitchinterval() = {sys.getswitchinterval() * 1e3:g} ms."
    )
    return {"throughput": throughput, "latency": latency}


def section_memory(args: argparse.Namespace) -> None:
    """Print bytes per retained record for the compiled core and the twin.

    Each engine fills one object in steps to every measured size, so that the
    slow traced run of the twin happens once.
    """
    sizes = [100_000, 1_000_000, 3_000_000]
    pairs = workload.tokens_and_usd()
    compiled: dict[int, int] = {}
    if CompiledBudget is not None:
        budget = CompiledBudget(workload.windows())
        filled = 0
        for size in sizes:
            time_calls(budget.record, cycle(pairs, size - filled))
            filled = size
            compiled[size] = budget._allocated_bytes()
        del budget

    traced: dict[int, int] = {}
    steps = [cycle(pairs, b - a) for a, b in zip([0, *sizes], sizes, strict=False)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    twin = TwinBudget(workload.windows())
    for size, step in zip(sizes, steps, strict=True):
        time_calls(twin.record, step)
        traced[size] = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del twin, steps
    gc.collect()

    rows = []
    for size in sizes:
        row = [f"{size:,}"]
        if size in compiled:
            row += [f"{compiled[size]:,}", f"{compiled[size] / size:.1f}"]
        else:
            row += ["skipped: not built", ""]
        row += [f"{traced[size]:,}", f"{traced[size] / size:.1f}"]
        rows.append(row)
    print(
        f"\n## memory: bytes per retained record (a record is {RECORD_BYTES} "
        f"bytes: timestamp, tokens, nano-dollars)\n"
    )
    print(
        markdown_table(
            [
                "records",
                "compiled: ring bytes",
                "compiled: bytes/record",
                "twin: traced bytes",
                "twin: bytes/record",
            ],
            rows,
        )
    )
    print(
        "\nThe compiled ring's capacity is a power of two, doubled when full "
        "(ring bytes are its real allocation, from _allocated_bytes()); the "
        "twin's bytes are what tracemalloc traces while one new object fills."
    )


#: The shipped sample trace and the budget the replay section runs it through.
TRACE = HERE.parent / "data" / "azure_llm_trace_2023_code.csv"
REPLAY_FLAGS = [
    "--window",
    "1m:tokens=400000,usd=1.5",
    "--window",
    "1h:usd=40",
    "--window",
    "1d:usd=100",
    "--price",
    "input=3,output=15",
]


def replay_stages(engine: str) -> tuple[list[tuple[str, Callable[[], Any]]], str]:
    """Return the timed stages of one replay on ``engine``, and why any are missing.

    The whole command is run through the command line's entry point with its
    report captured. Parsing alone and the budget loop alone call the two
    steps the command is made of; if they cannot be reached, only the whole
    command is timed.
    """
    import contextlib
    import io

    from llm_budget_window import cli

    argv = ["replay", str(TRACE), *REPLAY_FLAGS, "--engine", engine]

    def whole() -> int:
        with contextlib.redirect_stdout(io.StringIO()):
            status = cli.main(argv)
        if status != 0:
            raise RuntimeError(f"llm-budget-window {' '.join(argv)} exited {status}")
        return status

    stages: list[tuple[str, Callable[[], Any]]] = [("whole command", whole)]
    try:
        from llm_budget_window._replay import replay
        from llm_budget_window._replay_input import Columns, read_log

        args = cli.build_parser().parse_args(argv)
        budget_class = cli._load_engine(engine)[1]
        log = read_log(
            args.log, columns=Columns(), prices=args.price, file_format=args.format
        )
        replay(log, args.window, budget_class)
    except Exception as error:  # the split is optional; the whole is still timed
        return stages, f"parsing and loop not timed apart: {error!r}"

    def parse() -> Any:
        return read_log(
            args.log, columns=Columns(), prices=args.price, file_format=args.format
        )

    def loop() -> Any:
        return replay(log, args.window, budget_class)

    stages += [("parsing the log", parse), ("budget loop", loop)]
    return stages, ""


def section_replay(args: argparse.Namespace) -> None:
    """Print the replay command's calls/s, parsing and budget loop apart."""
    print("\n## replay: `llm-budget-window replay` on the shipped trace\n")
    try:
        from llm_budget_window import cli  # noqa: F401 (only whether it is there)
    except ImportError as error:
        print(f"skipped: replay command not present ({error})")
        return
    if not TRACE.is_file():
        print(f"skipped: the sample trace data/{TRACE.name} is not in this checkout")
        return
    calls = sum(1 for _ in TRACE.open(encoding="utf-8")) - 1

    engines = ["c", "py"] if CompiledBudget is not None else ["py"]
    jobs: list[tuple[str, str, Callable[[], Any]]] = []
    notes = []
    for engine in engines:
        try:
            stages, note = replay_stages(engine)
            for stage in stages:
                stage[1]()
        except Exception as error:  # a broken command is reported, not hidden
            print(f"skipped: the replay command failed on --engine {engine}: {error}")
            return
        if note:
            notes.append(note)
        jobs += [(engine, name, run) for name, run in stages]

    samples: dict[tuple[str, str], list[int]] = {}
    rng = random.Random(13)
    for _ in range(args.replay_repeats):
        rng.shuffle(jobs)
        for engine, name, run in jobs:
            gc.collect()
            start = cpu_ns()
            run()
            samples.setdefault((engine, name), []).append(cpu_ns() - start)

    rows = []
    for engine in engines:
        for name in ("whole command", "parsing the log", "budget loop"):
            if (engine, name) not in samples:
                continue
            median = statistics.median(samples[(engine, name)])
            rows.append(
                [
                    "compiled core" if engine == "c" else "pure-Python twin",
                    name,
                    f"{median / 1e6:,.1f}",
                    f"{calls / (median / 1e9):,.0f}",
                    f"{median / calls / 1e3:,.2f}",
                ]
            )
    print(
        f"{calls:,} calls of data/{TRACE.name}, flags `{' '.join(REPLAY_FLAGS)}`; "
        f"median of {args.replay_repeats} interleaved repeats, in process "
        f"(interpreter start-up not included)\n"
    )
    print(
        markdown_table(["engine", "stage", "ms (median)", "calls/s", "us/call"], rows)
    )
    for note in sorted(set(notes)):
        print(f"\n{note}")


def header(floor_module: Any) -> None:
    """Print the machine, the versions and the interpreter."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    print("# llm-budget-window benchmarks\n")
    print(
        f"- machine: {cpu}, {os.cpu_count()} logical CPUs, "
        f"{platform.system()} {platform.release()}"
    )
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"- Python {platform.python_version()} "
        f"({platform.python_implementation()}, GIL "
        f"{'enabled' if gil_enabled else 'disabled'})"
    )
    versions = [
        f"llm-budget-window {llm_budget_window.__version__} "
        f"(engine: {'compiled' if CompiledBudget else 'twin only'})"
    ]
    for distribution in (
        "Cython",
        "limits",
        "pyrate-limiter",
        "pytest-benchmark",
        "matplotlib",
    ):
        versions.append(f"{distribution} {peer_version(distribution) or 'missing'}")
    print("- versions: " + ", ".join(versions))
    pairs = workload.tokens_and_usd()
    loops = [time_loop(cycle(pairs, 20_000)) / 20_000 for _ in range(21)]
    print(
        f"- the bare benchmark loop costs {statistics.median(loops):.1f} ns a "
        f"call here; it is subtracted from every row"
    )


def quartiles(samples: Sequence[float]) -> tuple[float, float]:
    """Return the 25th and 75th percentiles of ``samples``."""
    if len(samples) < 2:
        return samples[0], samples[0]
    q1, _, q3 = statistics.quantiles(samples, n=4)
    return q1, q3


def plot(path: Path, speed: dict[str, Any]) -> None:
    """Write a PNG of ns per call per implementation (log scale).

    Bars are medians, whiskers span the 25th to 75th percentile; skipped rows
    keep their place, with the reason written in.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"floor": "#9a9a9a", "ours": "#3b6ea5", "peer": "#d08a2e"}

    def kind(name: str) -> str:
        if name.startswith("floor"):
            return "floor"
        if name.startswith(("compiled", "pure-Python", "llm-budget-window")):
            return "ours"
        return "peer"

    panels = [("steady", speed["steady"]), ("evicting", speed["evicting"])]
    figure, axes = plt.subplots(
        2,
        1,
        figsize=(10, 8),
        gridspec_kw={"height_ratios": [len(p[1]) for p in panels]},
    )
    titles = {
        "steady": "record, 3 windows (60 s, 1 h, 1 d), nothing rejected",
        "evicting": "record, evicting every call (0.05 s, 0.5 s, 5 s)",
    }
    measured = [c for _, cs in panels for c in cs if c.samples]
    floors = {
        key: statistics.median(cs[0].samples) if cs[0].samples else None
        for key, cs in panels
    }
    low = min(statistics.median(c.samples) for c in measured) / 2
    high = max(quartiles(c.samples)[1] for c in measured) * 12
    for axis, (key, contenders) in zip(axes, panels, strict=True):
        rows = contenders[::-1]
        for y, contender in enumerate(rows):
            if not contender.samples:
                axis.text(
                    low * 1.15,
                    y,
                    "skipped: " + contender.skipped,
                    va="center",
                    fontsize=7,
                    color="#777777",
                )
                continue
            median = statistics.median(contender.samples)
            q1, q3 = quartiles(contender.samples)
            axis.barh(
                y,
                median,
                color=colours[kind(contender.name)],
                xerr=[[max(median - q1, 0)], [max(q3 - median, 0)]],
                error_kw={"ecolor": "#333333", "capsize": 2, "lw": 0.8},
            )
            label = f"{median:,.0f} ns"
            floor_ns = floors[key]
            if floor_ns and contender is not contenders[0]:
                label += f"  ({median / floor_ns:,.1f}x floor)"
            axis.text(max(median, q3) * 1.15, y, label, va="center", fontsize=8)
        axis.set_yticks(range(len(rows)), [c.name for c in rows], fontsize=8)
        axis.set_xscale("log")
        axis.set_xlim(low, high)
        axis.set_title(titles[key], fontsize=10)
        axis.grid(axis="x", which="major", color="#dddddd", lw=0.6)
        axis.set_axisbelow(True)
    axes[-1].set_xlabel(
        "ns per call, log scale (bar: median of interleaved repeats; "
        "whisker: 25th to 75th percentile)",
        fontsize=8,
    )
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in ("floor", "ours", "peer")
    ]
    axes[0].legend(
        handles,
        ["floor", "llm-budget-window", "peer library"],
        fontsize=8,
        loc="upper right",
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"\nplot written to {path}")


def main(argv: list[str] | None = None) -> None:
    """Run every section and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument(
        "--calls",
        type=int,
        default=20_480,
        help="calls in one timed batch (default 20480)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=41,
        help="interleaved repeats of every batch (default 41)",
    )
    parser.add_argument(
        "--thread-calls",
        type=int,
        default=800_000,
        help="try_record calls per thread run, shared out among the threads "
        "(default 800000)",
    )
    parser.add_argument(
        "--thread-repeats",
        type=int,
        default=11,
        help="interleaved repeats of every thread run (default 11)",
    )
    parser.add_argument(
        "--replay-repeats",
        type=int,
        default=9,
        help="interleaved repeats of every replay stage (default 9)",
    )
    parser.add_argument(
        "--pyrate-warmup",
        type=float,
        default=5.2,
        help="seconds pyrate-limiter runs before the evicting "
        "timing (default 5.2, past its 5 s window)",
    )
    parser.add_argument(
        "--baseline",
        default="llm-budget-window==0.1.0",
        help="the PyPI release to compare with",
    )
    parser.add_argument(
        "--baseline-path",
        default=None,
        help="use the llm_budget_window installed in this "
        "directory instead of installing --baseline",
    )
    parser.add_argument(
        "--sections",
        default="speed,threads,memory,replay",
        help="comma-separated sections to run",
    )
    parser.add_argument(
        "--plot", type=Path, default=None, help="write a PNG of the speed tables here"
    )
    parser.add_argument(
        "--quick", action="store_true", help="few repeats, small batches: a smoke run"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.repeats = 4096, 3
        args.thread_calls, args.thread_repeats = 80_000, 1
        args.pyrate_warmup = 0.5
        args.replay_repeats = 1
    sections = set(args.sections.split(","))

    try:
        floor_module = build_floor()
    except ImportError as error:
        raise SystemExit(
            f"compare.py: the floor is compiled with Cython and setuptools, which "
            f'are missing ({error}): pip install -e ".[bench]"'
        ) from None
    header(floor_module)
    speed = None
    if "speed" in sections:
        speed = section_speed(args, floor_module)
    if "threads" in sections:
        section_threads(args)
    if "memory" in sections:
        section_memory(args)
    if "replay" in sections:
        section_replay(args)
    if args.plot is not None and speed is not None:
        plot(args.plot, speed)


if __name__ == "__main__":
    main()
