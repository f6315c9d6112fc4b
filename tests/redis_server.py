"""A real Redis server for the Redis backend's tests, and the helpers they share.

The session's server is ``REDIS_URL`` when that is set; otherwise the suite
starts ``redis-server`` from ``PATH`` on a free loopback port, without
persistence, and stops it at the end. Without a server binary the tests that
need one are skipped, saying why, unless the environment variable ``CI`` is
set: then they fail, so that CI cannot pass without running them.

Import the fixtures into a test module (``from .redis_server import ...``);
pytest finds fixtures in the module's namespace.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from llm_budget_window import (
    Breach,
    Reservation,
    Window,
    WindowBreached,
    WindowSnapshot,
)
from llm_budget_window._types import Number, usd_to_nanos
from llm_budget_window.redis import BudgetBackendError, RedisBudgetWindows

IN_CI = bool(os.environ.get("CI"))


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_server_binary() -> str:
    """Return the path of ``redis-server``, or skip (fail when CI is set)."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = (
            "redis-server is not on PATH and REDIS_URL is not set, so the Redis "
            "backend was not tested (install Redis, e.g. apt-get install "
            "redis-server, or point REDIS_URL at a server)"
        )
        if IN_CI:
            pytest.fail(f"CI is set, so this is an error: {reason}", pytrace=False)
        pytest.skip(reason)
    return binary


class RedisServer:
    """A ``redis-server`` child process on one loopback port, without persistence."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING (at most 10 s)."""
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        with redis.Redis(port=self.port, socket_connect_timeout=0.5) as probe:
            while True:
                try:
                    probe.ping()
                    return
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self._process.poll() is not None:
                        self.stop()
                        raise RuntimeError(
                            f"redis-server did not start on port {self.port}"
                        ) from None
                    time.sleep(0.05)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        """Stop the server if it runs."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of the session's Redis server (REDIS_URL, or one started here)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer(require_server_binary(), free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def private_redis_server() -> Iterator[RedisServer]:
    """A server of this test's own, which the test may kill and restart."""
    server = RedisServer(require_server_binary(), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the session's server, closed after the test."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


def no_retry_client(url: str) -> redis.Redis:
    """Return a client that fails at once instead of retrying (for fault tests)."""
    return redis.Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1, socket_timeout=5
    )


def unique_name(prefix: str = "test") -> str:
    """Return a budget name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex}"


class ClockedRedisBudget(RedisBudgetWindows):
    """A RedisBudgetWindows that takes a test's ``clock=`` for a missing ``now=``.

    For the behaviour suite, whose tests drive time with a clock: each call
    without ``now`` passes the clock's reading as ``now``, so the server sees
    exactly the times the in-process engines would. Without a clock, time is
    the server's, as for any RedisBudgetWindows.
    """

    __slots__ = ("_clock",)

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        windows: Iterable[Window],
        *,
        clock: Callable[[], Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(client, name, windows, **options)
        self._clock = clock

    def _at(self, now: Number | None) -> Number | None:
        if now is None and self._clock is not None:
            reading: Number = self._clock()
            return reading
        return now

    def try_record(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> Breach | None:
        return super().try_record(tokens, usd, now=self._at(now))

    def check(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> Breach | None:
        return super().check(tokens, usd, now=self._at(now))

    def retry_after(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> float:
        return super().retry_after(tokens, usd, now=self._at(now))

    def snapshot(self, *, now: Number | None = None) -> list[WindowSnapshot]:
        return super().snapshot(now=self._at(now))

    def reserve(
        self, tokens: int, usd: Number = 0, *, now: Number | None = None
    ) -> Reservation:
        return super().reserve(tokens, usd, now=self._at(now))


# -- the concurrency test's worker: module level, so that spawn can import it


def _in_threads(
    url: str,
    name: str,
    windows: list[Window],
    threads: int,
    seed: int,
    work: Callable[[RedisBudgetWindows, random.Random], list[tuple[int, int]]],
) -> list[tuple[int, int]]:
    """Run ``work(budget, rng)`` in ``threads`` threads on one client; join them.

    Returns every thread's list, concatenated; re-raises the first
    BudgetBackendError a thread met.
    """
    client = redis.Redis.from_url(url)
    budget = RedisBudgetWindows(client, name, windows)
    results: list[tuple[int, int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run(thread_seed: int) -> None:
        try:
            mine = work(budget, random.Random(thread_seed))
        except BudgetBackendError as error:
            errors.append(error)
            return
        with lock:
            results.extend(mine)

    workers = [
        threading.Thread(target=run, args=(seed * 1000 + i,)) for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    client.close()
    if errors:
        raise errors[0]
    return results


def hammer(
    url: str,
    name: str,
    windows: list[Window],
    threads: int,
    calls: int,
    seed: int,
) -> list[tuple[int, int]]:
    """Call ``try_record`` from several threads; return what was admitted.

    Each admitted call is returned as (tokens, nano-dollars), exactly as the
    caller was told it was counted.
    """

    def work(budget: RedisBudgetWindows, rng: random.Random) -> list[tuple[int, int]]:
        admitted = []
        for _ in range(calls):
            tokens = rng.randint(1, 200)
            usd = tokens * rng.uniform(1e-7, 3e-6)
            if budget.try_record(tokens, usd) is None:
                admitted.append((tokens, usd_to_nanos(usd)))
        return admitted

    return _in_threads(url, name, windows, threads, seed, work)


def reserve_hammer(
    url: str,
    name: str,
    windows: list[Window],
    threads: int,
    calls: int,
    seed: int,
) -> list[tuple[int, int]]:
    """Reserve, then settle or release, from several threads; return what stayed.

    Each reservation that was admitted and settled is returned as (tokens,
    nano-dollars) settled; released ones and refusals are not returned.
    """

    def work(budget: RedisBudgetWindows, rng: random.Random) -> list[tuple[int, int]]:
        kept = []
        for _ in range(calls):
            try:
                reservation = budget.reserve(rng.randint(50, 200), "0.0002")
            except WindowBreached:
                continue
            if rng.random() < 0.3:
                reservation.release()
                continue
            tokens = rng.randint(0, 300)
            usd = tokens * rng.uniform(1e-7, 3e-6)
            reservation.settle(tokens, usd)
            kept.append((tokens, usd_to_nanos(usd)))
        return kept

    return _in_threads(url, name, windows, threads, seed, work)
