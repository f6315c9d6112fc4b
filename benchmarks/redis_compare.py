"""Measure the Redis backend against its floor and its peers, in one run.

    python benchmarks/redis_compare.py

starts its own ``redis-server`` on a free loopback port (127.0.0.1 only,
without persistence), and prints, as Markdown tables, for 1 client, 8 threads
of one process and 4 processes sharing one budget:

- the floor: EVALSHA of an empty script (``return 0``);
- ``RedisBudgetWindows.try_record`` with 3 windows (60 s, 1 h, 1 d), calls of
  100 to 2000 tokens at $3 per million tokens, caps on tokens and USD in
  every window, high enough that nothing is rejected;
- ``limits`` (Redis storage, moving window, three limits, ``hit(item,
  cost=...)``) and ``pyrate-limiter`` (Redis bucket, three rates,
  ``try_acquire(name, weight=...)``), each once with weight 1 per call and
  once with the call's token count as its weight.

For each: calls/s, p50 and p99 latency, the ratio of its calls/s to the
floor's in the same repeat, the round trips per call and the server time per
call, both from the deltas of ``INFO commandstats``. Commands that a script
issues are also counted there, so a short census under ``MONITOR`` first
tells which commands each contender sends itself and which its scripts send.
Contenders are interleaved in a rotating order within every repeat and
figures are medians over repeats, so that the load of a shared machine falls
on all of them alike. Both peers store one entry per unit of weight, so their
weighted runs make fewer calls (``--weighted-calls``); a peer that is not
installed is reported as skipped.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import multiprocessing
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import redis
import redis.utils

#: USD per token: $3 per million tokens.
USD_PER_TOKEN = 3e-6

#: Token counts cycled through by every contender (uniform in 100..2000).
TOKEN_COUNTS = [random.Random(20_230).randint(100, 2000) for _ in range(4096)]

#: Window durations in seconds and token caps: far above any run's total.
DURATIONS_AND_TOKEN_CAPS = ((60, 10**12), (3600, 10**13), (86_400, 10**14))

#: Calls each worker makes before a measurement, to load scripts and connect.
WARMUP_CALLS = 20

#: Calls observed under MONITOR to tell a contender's own commands apart.
CENSUS_CALLS = 20

#: Commands the harness itself sends between two INFO snapshots.
HARNESS_COMMANDS = frozenset({"info"})

#: Commands that run a script: everything they do costs one round trip.
SCRIPT_COMMANDS = frozenset({"evalsha", "eval", "evalsha_ro", "eval_ro", "fcall"})

MODES = (("1 client", 1, 1), ("8 threads", 1, 8), ("4 processes", 4, 1))


# -- the contenders: each is a callable of one call's token count -------------


class Floor:
    """EVALSHA of a script that returns 0 at once: the cost of a round trip."""

    label = "floor: EVALSHA of `return 0`"

    def __init__(self, url: str, key: str, weighted: bool) -> None:
        self.client = redis.Redis.from_url(url)
        self.sha = self.client.script_load("return 0")

    def __call__(self, tokens: int) -> bool:
        return self.client.evalsha(self.sha, 0) == 0

    def close(self) -> None:
        self.client.close()


class Ours:
    """``RedisBudgetWindows.try_record`` with tokens and USD on 3 windows."""

    label = "llm-budget-window `try_record`, 3 windows, tokens + USD"

    def __init__(self, url: str, key: str, weighted: bool) -> None:
        from llm_budget_window import Window
        from llm_budget_window.redis import RedisBudgetWindows

        windows = [
            Window(
                f"w{duration}s",
                duration,
                token_cap=token_cap,
                usd_cap=token_cap * USD_PER_TOKEN,
                request_cap=token_cap,
            )
            for duration, token_cap in DURATIONS_AND_TOKEN_CAPS
        ]
        self.client = redis.Redis.from_url(url)
        self.budget = RedisBudgetWindows(self.client, key, windows)

    def __call__(self, tokens: int) -> bool:
        return self.budget.try_record(tokens, tokens * USD_PER_TOKEN) is None

    def close(self) -> None:
        self.client.close()


class Limits:
    """``limits``: moving window on its Redis storage, one ``hit`` per limit."""

    label = "`limits` moving window, 3 limits"

    def __init__(self, url: str, key: str, weighted: bool) -> None:
        from limits import RateLimitItemPerDay, RateLimitItemPerHour
        from limits import RateLimitItemPerMinute as PerMinute
        from limits.storage import RedisStorage
        from limits.strategies import MovingWindowRateLimiter

        self.storage = RedisStorage(url)
        self.limiter = MovingWindowRateLimiter(self.storage)
        caps = [cap for _, cap in DURATIONS_AND_TOKEN_CAPS]
        self.items = [
            PerMinute(caps[0], namespace=key),
            RateLimitItemPerHour(caps[1], namespace=key),
            RateLimitItemPerDay(caps[2], namespace=key),
        ]
        self.weighted = weighted

    def __call__(self, tokens: int) -> bool:
        cost = tokens if self.weighted else 1
        # No short cut on the first refusal: every limit is charged, as an
        # application checking three limits one by one would.
        admitted = [self.limiter.hit(item, "bench", cost=cost) for item in self.items]
        return all(admitted)

    def close(self) -> None:
        self.storage.get_connection().close()


class Pyrate:
    """``pyrate-limiter``: one Redis bucket holding three rates."""

    label = "`pyrate-limiter` Redis bucket, 3 rates"

    def __init__(self, url: str, key: str, weighted: bool) -> None:
        from pyrate_limiter import Limiter, Rate, RedisBucket

        self.client = redis.Redis.from_url(url)
        rates = [
            Rate(cap, duration * 1000) for duration, cap in DURATIONS_AND_TOKEN_CAPS
        ]
        self.limiter = Limiter(RedisBucket.init(rates, self.client, key))
        self.weighted = weighted

    def __call__(self, tokens: int) -> bool:
        weight = tokens if self.weighted else 1
        # Blocking, as pyrate-limiter's default, with a bound: without blocking
        # a thread that finds the limiter's lock held is refused at once.
        acquired = self.limiter.try_acquire("bench", weight=weight, timeout=5)
        return acquired is True

    def close(self) -> None:
        self.limiter.close()
        self.client.close()


CONTENDER_CLASSES: dict[str, type[Any]] = {
    "floor": Floor,
    "ours": Ours,
    "limits": Limits,
    "pyrate": Pyrate,
}

PEER_DISTRIBUTIONS = {"limits": "limits", "pyrate": "pyrate-limiter"}


@dataclass(frozen=True)
class Contender:
    """One row of the tables: a contender class and whether weights are tokens."""

    kind: str
    weighted: bool

    @property
    def row_id(self) -> str:
        return f"{self.kind}-tokens" if self.weighted else self.kind

    @property
    def label(self) -> str:
        label: str = CONTENDER_CLASSES[self.kind].label
        if self.kind in PEER_DISTRIBUTIONS:
            label += ", weight = tokens" if self.weighted else ", weight 1"
        return label

    def build(self, url: str, key: str) -> Any:
        return CONTENDER_CLASSES[self.kind](url, key, self.weighted)


# -- the workers: persistent processes, each driving one or more threads ----


@dataclass
class WorkerResult:
    """What one worker measured: its span, CPU time, latencies, refusals."""

    start_ns: int
    end_ns: int
    cpu_ns: int
    latencies_ns: list[int]
    refused: int


def drive(
    call: Callable[[int], bool],
    calls: int,
    threads: int,
    seconds: float,
    offset: int,
    pipe: Connection,
) -> WorkerResult:
    """Make ``calls`` calls from ``threads`` threads, stopping after ``seconds``.

    Every thread first makes ``WARMUP_CALLS`` calls of its own (so that it
    holds a connection), then the parent is told "ready" and the threads wait
    for its "go" before the timed calls.
    """
    per_thread = [calls // threads + (i < calls % threads) for i in range(threads)]
    latencies: list[list[int]] = [[] for _ in range(threads)]
    refused = [0] * threads
    ends = [0] * threads
    warmed = threading.Barrier(threads + 1)
    go = threading.Barrier(threads + 1)
    deadline_ns = 0
    clock = time.perf_counter_ns

    def run(index: int) -> None:
        mine = latencies[index]
        count = len(TOKEN_COUNTS)
        position = offset + index * 997
        for i in range(WARMUP_CALLS):
            call(TOKEN_COUNTS[(position - i) % count])
        warmed.wait()
        go.wait()
        for _ in range(per_thread[index]):
            tokens = TOKEN_COUNTS[position % count]
            position += 1
            before = clock()
            admitted = call(tokens)
            after = clock()
            mine.append(after - before)
            if not admitted:
                refused[index] += 1
            if after > deadline_ns:
                break
        ends[index] = clock()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    warmed.wait()
    pipe.send(("ready", None))
    pipe.recv()
    cpu_before = time.process_time_ns()
    start = clock()
    deadline_ns = start + int(seconds * 1e9)
    go.wait()
    for worker in workers:
        worker.join()
    cpu_ns = time.process_time_ns() - cpu_before
    return WorkerResult(
        start,
        max(ends),
        cpu_ns,
        [x for part in latencies for x in part],
        sum(refused),
    )


def worker_main(pipe: Connection) -> None:
    """Serve measurement requests from the parent until it sends None."""
    while True:
        task = pipe.recv()
        if task is None:
            return
        contender, url, key, calls, threads, seconds, offset = task
        try:
            call = contender.build(url, key)
            call(TOKEN_COUNTS[0])
        except Exception as error:  # reported to the parent, which skips the row
            pipe.send(("error", f"{type(error).__name__}: {error}"))
            continue
        result = drive(call, calls, threads, seconds, offset, pipe)
        call.close()
        pipe.send(("done", result))


class WorkerPool:
    """Processes started once (spawn) and reused by every measurement."""

    def __init__(self, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes = []
        for _ in range(size):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=worker_main, args=(child_end,))
            process.start()
            self.pipes.append(parent_end)
            self.processes.append(process)

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()


# -- the server and its counters ---------------------------------------------


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LoopbackRedis:
    """A ``redis-server`` child on 127.0.0.1, without persistence."""

    def __init__(self, binary: str, max_memory_mb: int) -> None:
        self.port = free_loopback_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--maxmemory", f"{max_memory_mb}mb",
                "--maxmemory-policy", "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.client = redis.Redis.from_url(self.url, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"redis-server did not start on port {self.port}"
                    ) from None
                time.sleep(0.05)
        self.version = self.client.info("server")["redis_version"]

    def command_stats(self) -> dict[str, tuple[int, int]]:
        """Return each command's (calls, usec) since the server started."""
        stats = self.client.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in stats.items()
        }

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def stats_delta(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """Return (calls, usec) per command between two snapshots, harness excluded."""
    delta = {}
    for name, (calls, usec) in after.items():
        was_calls, was_usec = before.get(name, (0, 0))
        if calls > was_calls and name not in HARNESS_COMMANDS:
            delta[name] = (calls - was_calls, usec - was_usec)
    return delta


def census(server: LoopbackRedis, contender: Contender) -> dict[str, dict[str, float]]:
    """Return per command the share sent by the client itself, from MONITOR.

    The answer maps each command name to ``{"client": n, "script": m}`` per
    call: ``client`` commands are round trips, ``script`` ones run inside a
    script the client sent.
    """
    call = contender.build(server.url, f"census-{contender.row_id}")
    for i in range(WARMUP_CALLS):
        call(TOKEN_COUNTS[i])
    start_marker, end_marker = "census-start", "census-end"
    seen: list[dict[str, Any]] = []
    started = threading.Event()

    def listen() -> None:
        monitor_client = redis.Redis.from_url(server.url, decode_responses=True)
        with monitor_client.monitor() as monitor:
            server.client.echo(start_marker)
            recording = False
            while True:
                command = monitor.next_command()
                text = command["command"]
                if text == f"ECHO {start_marker}":
                    recording = True
                    started.set()
                elif text == f"ECHO {end_marker}":
                    break
                elif recording:
                    seen.append(command)
        monitor_client.close()

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    if not started.wait(10):
        raise RuntimeError("MONITOR did not start")
    for i in range(CENSUS_CALLS):
        call(TOKEN_COUNTS[i])
    server.client.echo(end_marker)
    listener.join(10)
    call.close()

    shares: dict[str, dict[str, float]] = {}
    for command in seen:
        name = command["command"].split(" ", 1)[0].lower()
        side = "script" if command["client_type"] == "lua" else "client"
        entry = shares.setdefault(name, {"client": 0.0, "script": 0.0})
        entry[side] += 1 / CENSUS_CALLS
    server.client.flushall()
    return shares


# -- one measurement, many repeats --------------------------------------------


@dataclass
class Measurement:
    """One contender in one mode in one repeat."""

    calls: int
    calls_per_second: float
    p50_us: float
    p99_us: float
    round_trips: float
    server_us: float
    client_cpu_us: float
    refused: int
    commands: dict[str, float]


def percentile(sorted_values: Sequence[int], fraction: float) -> float:
    """Return the nearest-rank percentile of already sorted values."""
    index = min(
        len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1)
    )
    return float(sorted_values[index])


def measure(
    server: LoopbackRedis,
    pool: WorkerPool,
    contender: Contender,
    shares: dict[str, dict[str, float]],
    mode: tuple[str, int, int],
    calls: int,
    seconds: float,
    key: str,
) -> Measurement:
    """Run one contender in one mode and return what it measured."""
    _, processes, threads = mode
    # NOTE(no eviction): every measurement starts from an empty server and
    # lasts far less than the shortest window (60 s), so no call evicts
    # anything. The steady state of a long-lived budget, where calls also
    # evict from every window, is not measured here.
    server.client.flushall()
    pipes = pool.pipes[:processes]
    per_process = [
        calls // processes + (i < calls % processes) for i in range(processes)
    ]
    for i, pipe in enumerate(pipes):
        pipe.send(
            (contender, server.url, key, per_process[i], threads, seconds, i * 7919)
        )
    replies = [pipe.recv() for pipe in pipes]
    errors = [detail for status, detail in replies if status == "error"]
    if errors:
        for (status, _), pipe in zip(replies, pipes, strict=True):
            if status == "ready":
                pipe.send("go")
                pipe.recv()
        raise RuntimeError(errors[0])

    before = server.command_stats()
    for pipe in pipes:
        pipe.send("go")
    results: list[WorkerResult] = [pipe.recv()[1] for pipe in pipes]
    after = server.command_stats()

    latencies = sorted(x for r in results for x in r.latencies_ns)
    made = len(latencies)
    span_ns = max(r.end_ns for r in results) - min(r.start_ns for r in results)
    delta = stats_delta(before, after)
    round_trips = 0.0
    server_usec = 0.0
    commands = {}
    for name, (count, usec) in delta.items():
        share = shares.get(name)
        if name in SCRIPT_COMMANDS or share is None:
            client_part = 1.0
        else:
            total = share["client"] + share["script"]
            client_part = share["client"] / total if total else 1.0
        round_trips += count * client_part
        # A script's usec already holds the time of the commands it ran.
        server_usec += usec * client_part
        commands[name] = count / made
    return Measurement(
        calls=made,
        calls_per_second=made / (span_ns / 1e9),
        p50_us=percentile(latencies, 0.50) / 1000,
        p99_us=percentile(latencies, 0.99) / 1000,
        round_trips=round_trips / made,
        server_us=server_usec / made,
        client_cpu_us=sum(r.cpu_ns for r in results) / made / 1000,
        refused=sum(r.refused for r in results),
        commands=commands,
    )


@dataclass
class Row:
    """Every repeat of one contender in one mode."""

    contender: Contender
    runs: dict[int, Measurement] = field(default_factory=dict)
    skipped: str = ""

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(run, attribute) for run in self.runs.values())

    def median_ratio(self, other: Row) -> float | None:
        """Return the median over repeats of this row's calls/s over the other's."""
        ratios = [
            run.calls_per_second / other.runs[i].calls_per_second
            for i, run in self.runs.items()
            if i in other.runs
        ]
        return statistics.median(ratios) if ratios else None


def installed(distribution: str) -> str | None:
    """Return the installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- the report ---------------------------------------------------------------


def fmt(value: float, digits: int = 2) -> str:
    """Format a number for a table, with thousands separators when large."""
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def print_mode_table(name: str, rows: dict[str, Row]) -> None:
    print(f"\n### {name}\n")
    print(
        "| contender | calls/s | p50 us | p99 us | ratio to floor | round trips "
        "per call | server us per call | client CPU us per call | calls measured "
        "| refused |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    floor = rows["floor"]
    for row in rows.values():
        if row.skipped or not row.runs:
            print(f"| {row.contender.label} | skipped: {row.skipped} ||||||||| ")
            continue
        ratio = row.median_ratio(floor)
        calls = sum(run.calls for run in row.runs.values())
        refused = sum(run.refused for run in row.runs.values())
        print(
            f"| {row.contender.label} | {fmt(row.median('calls_per_second'))} "
            f"| {fmt(row.median('p50_us'), 0)} | {fmt(row.median('p99_us'), 0)} "
            f"| {'-' if ratio is None else f'{ratio:.3f}'} "
            f"| {row.median('round_trips'):.2f} | {fmt(row.median('server_us'), 1)} "
            f"| {fmt(row.median('client_cpu_us'), 1)} "
            f"| {calls:,} in {len(row.runs)} | {refused} |"
        )


def print_commands_table(rows: dict[str, Row], shares: dict[str, Any]) -> None:
    print("\n### Commands per call (1 client; inside scripts in italics)\n")
    print("| contender | commands per call |")
    print("|---|---|")
    for row in rows.values():
        if row.skipped or not row.runs:
            continue
        share = shares[row.contender.row_id]
        parts = []
        last = row.runs[max(row.runs)]
        for name, count in sorted(last.commands.items(), key=lambda x: (-x[1], x[0])):
            entry = share.get(name)
            inside = entry is not None and entry["script"] > 0 and not entry["client"]
            text = f"{name} {count:.2f}"
            parts.append(f"*{text}*" if inside else text)
        print(f"| {row.contender.label} | {', '.join(parts)} |")


def print_targets(table: dict[str, dict[str, Row]]) -> None:
    print("\n### Targets\n")
    print("| target | mode | measured | met |")
    print("|---|---|---:|---|")
    for mode, _, _ in MODES:
        rows = table[mode]
        ours = rows.get("ours")
        if ours is None or not ours.runs:
            continue
        trips = ours.median("round_trips")
        met = abs(trips - 1) < 0.005
        print(
            f"| exactly 1 round trip per call | {mode} | {trips:.3f} "
            f"| {'yes' if met else 'no'} |"
        )
        server_us = ours.median("server_us")
        print(
            f"| server time per call <= 30 us | {mode} | {server_us:.1f} us "
            f"| {'yes' if server_us <= 30 else 'no'} |"
        )
        goals = (
            ("limits", 2.0, ">= 2x `limits`, weight 1"),
            ("pyrate", 0.9, ">= 0.9x `pyrate-limiter`, weight 1"),
            ("limits-tokens", 10.0, ">= 10x `limits`, weight = tokens"),
            ("pyrate-tokens", 10.0, ">= 10x `pyrate-limiter`, weight = tokens"),
        )
        for row_id, goal, text in goals:
            peer = rows.get(row_id)
            if peer is None or not peer.runs:
                print(f"| calls/s {text} | {mode} | not run | - |")
                continue
            ratio = ours.median_ratio(peer)
            assert ratio is not None
            print(
                f"| calls/s {text} | {mode} | {ratio:.2f}x "
                f"| {'yes' if ratio >= goal else 'no'} |"
            )


def print_header(server: LoopbackRedis, args: argparse.Namespace) -> None:
    import llm_budget_window

    print("## Redis backend against its floor and its peers\n")
    print(f"- machine: {platform.machine()}, {os.cpu_count()} cores, {cpu_model()}")
    print(f"- Python {platform.python_version()} ({platform.python_implementation()})")
    print(f"- redis-server {server.version} on 127.0.0.1, no persistence")
    versions = [f"llm-budget-window {llm_budget_window.__version__}"]
    for distribution in ("redis", "hiredis", "limits", "pyrate-limiter"):
        versions.append(f"{distribution} {installed(distribution) or 'not installed'}")
    print(f"- {', '.join(versions)}")
    parser = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "redis-py's pure Python"
    print(f"- commands packed and replies parsed by {parser}")
    print(
        f"- {args.rounds} repeats; per measurement {args.calls:,} calls at weight 1 "
        f"and {args.weighted_calls:,} with weight = tokens (at most "
        f"{args.seconds:g} s each); medians over repeats; ratios within a repeat"
    )


def cpu_model() -> str:
    """Return the CPU's model name, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5, help="repeats (default 5)")
    parser.add_argument(
        "--calls", type=int, default=3000, help="calls per measurement at weight 1"
    )
    parser.add_argument(
        "--weighted-calls",
        type=int,
        default=300,
        help="calls per measurement of a peer with weight = tokens",
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="time cap per measurement"
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated rows to run, e.g. floor,ours,pyrate (default: all)",
    )
    parser.add_argument(
        "--max-memory-mb", type=int, default=2048, help="the server's maxmemory"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not on PATH", file=sys.stderr)
        return 2

    contenders = [Contender("floor", False), Contender("ours", False)]
    skipped: dict[str, str] = {}
    for kind, distribution in PEER_DISTRIBUTIONS.items():
        for weighted in (False, True):
            contenders.append(Contender(kind, weighted))
        if installed(distribution) is None:
            skipped[kind] = f"{distribution} is not installed"
    if args.only:
        wanted = set(args.only.split(","))
        contenders = [c for c in contenders if c.row_id in wanted or c.kind == "floor"]

    server = LoopbackRedis(binary, args.max_memory_mb)
    pool = WorkerPool(max(processes for _, processes, _ in MODES))
    try:
        shares = {}
        for contender in contenders:
            if contender.kind not in skipped:
                shares[contender.row_id] = census(server, contender)
        table = {
            mode: {
                c.row_id: Row(c, skipped=skipped.get(c.kind, "")) for c in contenders
            }
            for mode, _, _ in MODES
        }
        for round_index in range(args.rounds):
            for mode in MODES:
                rows = table[mode[0]]
                shift = round_index % len(contenders)
                for contender in [*contenders[shift:], *contenders[:shift]]:
                    row = rows[contender.row_id]
                    if row.skipped:
                        continue
                    calls = args.weighted_calls if contender.weighted else args.calls
                    key = f"bench-{round_index}-{contender.row_id}"
                    try:
                        run = measure(
                            server, pool, contender, shares[contender.row_id],
                            mode, calls, args.seconds, key,
                        )  # fmt: skip
                    except (RuntimeError, redis.RedisError) as error:
                        row.skipped = f"failed: {error}"
                        continue
                    row.runs[round_index] = run
                    print(
                        f"repeat {round_index + 1}, {mode[0]}, {contender.row_id}: "
                        f"{run.calls_per_second:,.0f} calls/s",
                        file=sys.stderr,
                    )
        server.client.flushall()

        print_header(server, args)
        for mode, _, _ in MODES:
            print_mode_table(mode, table[mode])
        print_commands_table(table["1 client"], shares)
        print_targets(table)
    finally:
        pool.close()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
