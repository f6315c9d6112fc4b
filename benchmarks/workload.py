"""The workload every benchmark runs, defined once.

Three windows of 60 s, 1 h and 1 d; calls of 100 to 2000 tokens priced at
$3 per million tokens; caps high enough that nothing is rejected. The
evicting variant uses windows of 0.05 s, 0.5 s and 5 s with a time that
advances a fixed step per call, so that in steady state every call evicts
exactly one record from every window.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llm_budget_window import Window

#: USD per token: $3 per million tokens.
USD_PER_TOKEN = 3e-6

#: Calls in one batch of the workload (the pairs are reused round-robin).
PAIRS = 4096

#: Seconds the clock advances per call in the evicting variant.
EVICTING_STEP = 50e-6

#: Calls made before timing the evicting variant: more than fill the 5 s window.
EVICTING_PREFILL = 110_000


def tokens_and_usd(count: int = PAIRS, seed: int = 20_230) -> list[tuple[int, float]]:
    """Return ``count`` (tokens, USD) pairs, tokens uniform in 100..2000."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        tokens = rng.randint(100, 2000)
        pairs.append((tokens, tokens * USD_PER_TOKEN))
    return pairs


def windows(count: int = 3) -> list[Window]:
    """Return ``count`` windows of 60 s, 1 h, 1 d, 2 d, ... with high caps.

    The first window caps tokens, USD and requests, the others USD; no cap is
    ever reached by a benchmark.
    """
    from llm_budget_window import Window

    durations = [60, 3600, 86_400] + [86_400 * k for k in range(2, count)]
    result = [Window("minute", 60, token_cap=10**15, usd_cap=10**6, request_cap=10**15)]
    for i, duration in enumerate(durations[1:count], start=1):
        result.append(Window(f"w{i}_{duration}s", duration, usd_cap=10**7 * i))
    return result


def evicting_windows() -> list[Window]:
    """Return windows of 0.05 s, 0.5 s and 5 s with high caps."""
    from llm_budget_window import Window

    return [
        Window("50ms", 0.05, token_cap=10**15, usd_cap=10**6, request_cap=10**15),
        Window("500ms", 0.5, usd_cap=10**7),
        Window("5s", 5, usd_cap=10**8),
    ]


def evicting_times(count: int, start: float = 1000.0) -> list[float]:
    """Return ``count`` times in seconds, ``EVICTING_STEP`` apart."""
    return [start + i * EVICTING_STEP for i in range(count)]


def breaching_windows() -> list[Window]:
    """Return three windows whose first one admits no tokens at all."""
    from llm_budget_window import Window

    return [
        Window("minute", 60, token_cap=0),
        Window("hour", 3600, usd_cap=10**6),
        Window("day", 86_400, usd_cap=10**7),
    ]
