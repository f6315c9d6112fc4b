"""Reservations on the Redis backend: what the shared suite cannot see.

The behaviour of reserve, settle and release runs on Redis in
``test_reservations.py`` (engine id ``redis``). These tests cover what is
particular to a server: corrections found by call id, repeats after a
client retry, the stored fields, the cost per call, failures, the asyncio
reservation, and random runs compared with the pure-Python engine.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis
import redis.asyncio

from llm_budget_window import Reservation, ReservationError, Window, WindowBreached
from llm_budget_window._budget_py import BudgetWindows as PyBudgetWindows
from llm_budget_window.redis import (
    AsyncRedisBudgetWindows,
    AsyncRedisReservation,
    BudgetBackendError,
    RedisBudgetWindows,
    read_records,
)

from .redis_server import RedisServer, no_retry_client, reserve_hammer, unique_name
from .test_redis import NS, make_budget, random_windows

pytestmark = pytest.mark.redis

# The sync and the asyncio class in turn (ids ``sync`` and ``async``).
__all__ = ["make_budget"]


def usage(budget: Any, now: object) -> list[tuple[int, float, int]]:
    return [
        (s.tokens_used, s.usd_used, s.requests_used) for s in budget.snapshot(now=now)
    ]


@pytest.fixture
def budget(redis_client: redis.Redis) -> RedisBudgetWindows:
    return RedisBudgetWindows(
        redis_client,
        unique_name(),
        [Window("minute", 60, token_cap=1_000), Window("hour", 3_600)],
    )


# -- corrections found by call id, and repeats ---------------------------------


def test_settle_sent_twice_sets_the_amounts_once(budget: RedisBudgetWindows) -> None:
    reservation = budget.reserve(100, "0.10", now=0)

    budget._settle(reservation._seq, 300, 300_000_000)
    budget._settle(reservation._seq, 300, 300_000_000)

    assert usage(budget, 1) == [(300, 0.3, 1), (300, 0.3, 1)]


def test_release_sent_twice_removes_the_call_once(budget: RedisBudgetWindows) -> None:
    reservation = budget.reserve(100, now=0)
    budget.record(5, now=0)

    budget._release(reservation._seq)
    budget._release(reservation._seq)

    assert usage(budget, 1) == [(5, 0.0, 1), (5, 0.0, 1)]


def test_settle_arriving_after_a_release_changes_nothing(
    budget: RedisBudgetWindows,
) -> None:
    reservation = budget.reserve(100, now=0)

    budget._release(reservation._seq)
    budget._settle(reservation._seq, 700, 0)

    assert usage(budget, 1) == [(0, 0.0, 0), (0, 0.0, 0)]


def test_release_after_a_settle_removes_the_settled_amounts(
    budget: RedisBudgetWindows,
) -> None:
    reservation = budget.reserve(100, now=0)

    budget._settle(reservation._seq, 700, 0)
    budget._release(reservation._seq)

    assert usage(budget, 1) == [(0, 0.0, 0), (0, 0.0, 0)]


def test_reservation_settled_by_another_client_of_the_same_budget_is_found(
    redis_client: redis.Redis, redis_url: str
) -> None:
    name, windows = unique_name(), [Window("minute", 60)]
    mine = RedisBudgetWindows(redis_client, name, windows)
    reservation = mine.reserve(100, now=0)
    with redis.Redis.from_url(redis_url) as other_client:
        other = RedisBudgetWindows(other_client, name, windows)
        other.record(1, now=0)

        reservation.settle(40)

        assert usage(other, 0) == [(41, 0.0, 2)]


def test_settle_of_a_reservation_whose_budget_expired_changes_nothing(
    budget: RedisBudgetWindows, redis_client: redis.Redis
) -> None:
    reservation = budget.reserve(100, now=0)
    redis_client.delete(budget.key)  # as the key's expiry would
    budget.record(3, now=0)

    reservation.settle(900)

    assert usage(budget, 0) == [(3, 0.0, 1), (3, 0.0, 1)]


# -- what is stored ------------------------------------------------------------


def test_settled_record_carries_one_correction_field(
    budget: RedisBudgetWindows, redis_client: redis.Redis
) -> None:
    reservation = budget.reserve(100, "0.10", now=0)

    reservation.settle(250, "0.05")

    # The state, the config, the corrections held, the record, its call id
    # and its correction.
    assert redis_client.hlen(budget.key) == 6
    assert read_records(redis_client, budget.key) == [(0, 250, 50_000_000)]


def test_settle_to_the_estimate_stores_no_correction(
    budget: RedisBudgetWindows, redis_client: redis.Redis
) -> None:
    reservation = budget.reserve(100, "0.10", now=0)

    reservation.settle(100, "0.10")

    assert redis_client.hlen(budget.key) == 4
    assert usage(budget, 0) == [(100, 0.1, 1), (100, 0.1, 1)]


def test_released_record_is_not_among_the_records_read_back(
    budget: RedisBudgetWindows, redis_client: redis.Redis
) -> None:
    budget.record(1, now=0)
    budget.reserve(100, now=1).release()

    assert read_records(redis_client, budget.key) == [(0, 1, 0)]


def test_correction_is_deleted_with_its_record_when_it_leaves_the_longest_window(
    budget: RedisBudgetWindows, redis_client: redis.Redis
) -> None:
    budget.reserve(100, now=0).settle(7)
    budget.reserve(100, now=1).release()

    budget.record(1, now=3_601)

    assert redis_client.hlen(budget.key) == 4
    assert usage(budget, 3_601) == [(1, 0.0, 1), (1, 0.0, 1)]


# -- retry_after over corrected records ------------------------------------------


def test_retry_after_skips_a_released_record_to_the_next_that_makes_room(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(
        redis_client, unique_name(), [Window("w", 10, token_cap=100)]
    )
    budget.record(30, now=0)
    budget.reserve(40, now=1).release()
    budget.record(60, now=2)

    # 30 + 60 used: 11 more needs the record of t=0 to leave, 50 more the
    # record of t=2 too; the released one of t=1 never makes room.
    assert budget.retry_after(11, now=3) == 7.0
    assert budget.retry_after(50, now=3) == 9.0


def test_retry_after_counts_a_settled_record_at_its_actual_amount(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(
        redis_client, unique_name(), [Window("w", 10, token_cap=100)]
    )
    budget.reserve(10, now=0).settle(80)
    budget.record(20, now=1)

    assert budget.retry_after(70, now=2) == 8.0
    assert budget.retry_after(90, now=2) == 9.0


# -- overflow ------------------------------------------------------------------


def test_settle_that_would_pass_int64_raises_overflow_and_leaves_it_open(
    redis_client: redis.Redis,
) -> None:
    windows = [Window("counter", 60)]
    remote = RedisBudgetWindows(redis_client, unique_name(), windows)
    local = PyBudgetWindows(windows)
    messages = []
    for budget in (remote, local):
        budget.record(2**62 - 1, now=0)
        budget.record(2**62 - 1, now=0)
        reservation = budget.reserve(0, now=0)
        with pytest.raises(OverflowError) as raised:
            reservation.settle(2)
        messages.append(str(raised.value))
        assert reservation.state == "open"
        assert usage(budget, 0) == [(2**63 - 2, 0.0, 3)]
    assert messages[0] == messages[1]


# -- the same answers as the pure-Python engine, reservations included ----------


def _random_step(
    rng: random.Random, clock: list[Decimal], open_count: int
) -> tuple[Any, ...]:
    jump = rng.choice([0, 0, 1, 3, 10**9, 30 * 10**9, 2**60])
    if clock[0] + Decimal(jump) * NS < Decimal(2**61) * NS:
        clock[0] += Decimal(jump) * NS
    now = clock[0]
    tokens = rng.choice([0, 1, 10, 400, 2**61, 2**62 - 1])
    usd = rng.choice([0, 0.1, "0.000000001", rng.uniform(0, 2), "4000000000"])
    kinds = ["try_record", "check", "retry_after", "snapshot", "reserve", "reset"]
    weights = [4, 3, 4, 2, 6, 0.1]
    if open_count:
        kinds += ["settle", "release"]
        weights += [4, 2]
    kind = rng.choices(kinds, weights=weights)[0]
    return kind, tokens, usd, now, rng.randrange(max(open_count, 1))


def _apply(budget: Any, held: list[Any], step: tuple[Any, ...]) -> object:
    kind, tokens, usd, now, pick = step
    try:
        if kind == "snapshot":
            return budget.snapshot(now=now)
        if kind == "reset":
            return budget.reset()
        if kind == "reserve":
            held.append(budget.reserve(tokens, usd, now=now))
            return "reserved"
        if kind == "settle":
            held[pick].settle(tokens, usd)
            return held.pop(pick).tokens
        if kind == "release":
            held.pop(pick).release()
            return "released"
        return getattr(budget, kind)(tokens, usd, now=now)
    except WindowBreached as error:
        return error.breach
    except OverflowError as error:
        return ("OverflowError", str(error))


@pytest.mark.parametrize("seed", range(16))
def test_random_reservations_give_the_pure_python_engines_answers(
    make_budget: Callable[..., Any], seed: int
) -> None:
    rng = random.Random(seed)
    windows = random_windows(rng)
    remote = make_budget(windows)
    local = PyBudgetWindows(windows)
    remote_held: list[Any] = []
    local_held: list[Reservation] = []
    clock = [Decimal(rng.randint(-(10**12), 10**12)) * NS]
    for number in range(300):
        step = _random_step(rng, clock, len(local_held))
        expected = _apply(local, local_held, step)
        assert _apply(remote, remote_held, step) == expected, (number, step)
    assert remote.snapshot(now=clock[0]) == local.snapshot(now=clock[0])


# -- cost per call -------------------------------------------------------------

_COMMANDS = ("hget", "hmget", "hset", "hdel", "hexists", "pexpire", "time")


def _command_counts(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter(
        {
            name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
            for name in (*_COMMANDS, "evalsha")
        }
    )


def test_settle_and_release_do_the_same_server_work_with_2000_records_as_with_100(
    redis_client: redis.Redis,
) -> None:
    windows = [Window("second", 1), Window("long", 10**6)]
    work = {}
    for held in (100, 2_000):
        budget = RedisBudgetWindows(redis_client, unique_name(), windows)
        reservations = [budget.reserve(3, now=Decimal(i) / 100) for i in range(held)]
        before = _command_counts(redis_client)
        for reservation in reservations[-20:-10]:
            reservation.settle(5)
        for reservation in reservations[-10:]:
            reservation.release()
        work[held] = _command_counts(redis_client) - before
    assert work[100]["evalsha"] == 20
    assert work[2_000] == work[100]


# -- failures ------------------------------------------------------------------


def test_settle_fails_closed_while_the_server_is_down_and_can_be_retried(
    private_redis_server: RedisServer,
) -> None:
    client = no_retry_client(private_redis_server.url)
    budget = RedisBudgetWindows(client, unique_name(), [Window("w", 600)])
    reservation = budget.reserve(100, now=0)

    private_redis_server.kill()
    with pytest.raises(BudgetBackendError) as raised:
        reservation.settle(30)
    assert isinstance(raised.value.__cause__, redis.ConnectionError)
    assert reservation.state == "open"

    # The restarted server has lost the budget: the retry finds no record.
    private_redis_server.start()
    reservation.settle(30)
    assert reservation.state == "settled"
    assert usage(budget, 0) == [(0, 0.0, 0)]
    client.close()


def test_reserve_failing_open_is_admitted_uncounted_with_a_warning(
    private_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = no_retry_client(private_redis_server.url)
    budget = RedisBudgetWindows(
        client, unique_name(), [Window("w", 60, token_cap=10)], fail_open=True
    )
    private_redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="llm_budget_window.redis"):
        reservation = budget.reserve(1_000, now=0)
        reservation.settle(5)
    assert reservation.state == "settled"
    assert [r.getMessage().split("; ")[-1] for r in caplog.records] == [
        "admitting the call (fail_open=True)",
        "the reservation keeps the amounts Redis holds (fail_open=True)",
    ]
    private_redis_server.start()
    assert usage(budget, 0) == [(0, 0.0, 0)]
    client.close()


# -- the asyncio reservation ---------------------------------------------------


def _run_async(redis_url: str, scenario: Any) -> Any:
    async def main() -> Any:
        client = redis.asyncio.Redis.from_url(redis_url)
        budget = AsyncRedisBudgetWindows(
            client, unique_name(), [Window("minute", 60, token_cap=1_000)]
        )
        try:
            return await scenario(budget)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def _async_usage(budget: AsyncRedisBudgetWindows) -> list[tuple[int, int]]:
    return [(s.tokens_used, s.requests_used) for s in await budget.snapshot(now=0)]


def test_async_reserve_then_settle_counts_the_actual(redis_url: str) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        reservation = await budget.reserve(100, now=0)
        assert isinstance(reservation, AsyncRedisReservation)
        await reservation.settle(250)
        return reservation.state, reservation.tokens, await _async_usage(budget)

    assert _run_async(redis_url, scenario) == ("settled", 250, [(250, 1)])


def test_async_release_removes_the_call(redis_url: str) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        reservation = await budget.reserve(100, now=0)
        await reservation.release()
        return reservation.state, await _async_usage(budget)

    assert _run_async(redis_url, scenario) == ("released", [(0, 0)])


def test_async_second_settle_raises_reservation_error(redis_url: str) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        reservation = await budget.reserve(100, now=0)
        await reservation.settle(10)
        with pytest.raises(ReservationError, match="already settled"):
            await reservation.release()
        return await _async_usage(budget)

    assert _run_async(redis_url, scenario) == [(10, 1)]


def test_async_reserve_that_does_not_fit_raises_and_commits_nothing(
    redis_url: str,
) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        with pytest.raises(WindowBreached) as raised:
            await budget.reserve(1_001, now=0)
        return raised.value.attempted, await _async_usage(budget)

    assert _run_async(redis_url, scenario) == (1_001, [(0, 0)])


def test_exception_inside_async_with_releases_then_propagates(redis_url: str) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        reservation = await budget.reserve(100, now=0)
        with pytest.raises(KeyError, match="model failed"):
            async with reservation:
                raise KeyError("model failed")
        return reservation.state, await _async_usage(budget)

    assert _run_async(redis_url, scenario) == ("released", [(0, 0)])


def test_normal_exit_from_async_with_keeps_the_estimate(redis_url: str) -> None:
    async def scenario(budget: AsyncRedisBudgetWindows) -> Any:
        async with await budget.reserve(100, now=0) as reservation:
            pass
        return reservation.state, await _async_usage(budget)

    assert _run_async(redis_url, scenario) == ("open", [(100, 1)])


def _refusal_reads(budget: RedisBudgetWindows, now: Decimal) -> Counter[str]:
    client = budget.client
    before = _command_counts(client)
    assert budget.try_record(5, now=now) is not None
    return _command_counts(client) - before


def test_refusal_bisects_while_the_window_holds_no_corrected_record(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(
        redis_client, unique_name(), [Window("long", 10**6, token_cap=3 * 4_096)]
    )
    for i in range(4_096):
        budget.record(3, now=Decimal(i) / 100)

    reads = _refusal_reads(budget, Decimal(4_096) / 100)

    # Nothing to evict, known from the state alone: log2(4,096) probes,
    # then the time of the record found.
    assert (reads["hget"], reads["hmget"]) == (12 + 1, 1)


def test_refusal_walks_from_the_oldest_record_while_the_window_holds_a_correction(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(
        redis_client, unique_name(), [Window("long", 10**6, token_cap=3 * 4_096)]
    )
    budget.reserve(3, now=0).settle(2)
    for i in range(1, 4_096):
        budget.record(3, now=Decimal(i) / 100)
    budget.record(1, now=Decimal(4_096) / 100)

    reads = _refusal_reads(budget, Decimal(4_096) / 100)

    # 12,288 used; 5 more needs the records of t=0 (2 tokens) and t=0.01
    # (3 tokens) to leave: the walk reads those two and stops.
    assert (reads["hget"], reads["hmget"]) == (1, 1 + 2)


def test_window_bisects_again_once_its_corrected_records_have_aged_out(
    redis_client: redis.Redis,
) -> None:
    budget = RedisBudgetWindows(
        redis_client, unique_name(), [Window("w", 100, token_cap=3 * 1_024)]
    )
    budget.reserve(3, now=0).settle(2)
    budget.reserve(3, now=0).release()
    for i in range(1_024):
        budget.record(3, now=100 + Decimal(i) / 100)

    reads = _refusal_reads(budget, Decimal(111))

    # Both corrected records left at t=100; the window holds 1,024 plain
    # records: nothing to evict, then log2(1,024) probes and one read.
    assert (reads["hget"], reads["hmget"]) == (10 + 1, 1)


# -- many processes --------------------------------------------------------------


@pytest.mark.slow
def test_four_processes_reserving_settling_and_releasing_leave_exactly_what_was_settled(
    redis_url: str, redis_client: redis.Redis
) -> None:
    windows = [
        Window("burst", Decimal("0.05"), request_cap=10),
        Window("hour", 3_600, token_cap=10**9),
    ]
    name = unique_name("reserve-hammer")
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        results = pool.starmap(
            reserve_hammer,
            [(redis_url, name, windows, 4, 150, seed) for seed in range(4)],
        )
    kept = [call for result in results for call in result]
    budget = RedisBudgetWindows(redis_client, name, windows)
    hour = budget.snapshot()[1]

    assert (hour.tokens_used, hour.usd_used, hour.requests_used) == (
        sum(tokens for tokens, _ in kept),
        sum(nanos for _, nanos in kept) / 10**9,
        len(kept),
    )
    assert Counter(
        (tokens, nanos) for _, tokens, nanos in read_records(redis_client, budget.key)
    ) == Counter(kept)
    # The burst cap refused some reservations, or the test would prove little.
    assert len(kept) < 4 * 4 * 150 * 0.7


def test_async_settle_fails_closed_while_the_server_is_down_and_stays_open(
    private_redis_server: RedisServer,
) -> None:
    async def main() -> tuple[object, str]:
        client = redis.asyncio.Redis.from_url(
            private_redis_server.url, retry=None, socket_connect_timeout=1
        )
        budget = AsyncRedisBudgetWindows(client, unique_name(), [Window("w", 60)])
        reservation = await budget.reserve(100, now=0)
        private_redis_server.kill()
        try:
            with pytest.raises(BudgetBackendError) as raised:
                await reservation.settle(30)
        finally:
            await client.aclose()
        return raised.value.__cause__, reservation.state

    cause, state = asyncio.run(main())
    assert isinstance(cause, redis.ConnectionError)
    assert state == "open"
