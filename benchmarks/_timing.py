"""The timing loop the benchmark scripts share: peers interleaved, medians."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np


def interleaved_ms(
    runners: dict[str, Callable[[], object]],
    repeats: int,
    *,
    warmup: int = 0,
    min_sample_ms: float = 0.0,
) -> dict[str, float]:
    """Median milliseconds of each runner over ``repeats`` interleaved rounds.

    Each round calls every runner once, so that drifts of a shared machine hit
    all of them alike; the order rotates from round to round, so that no runner
    always follows the same one (a pure-Python peer leaves the caches cold for
    whatever runs next). ``warmup`` untimed rounds come first (runners
    that compile on their first call need at least one). Each runner must block
    until its result is ready.

    With ``min_sample_ms``, a runner faster than that is called several times
    in a row per round (as many as its last warm-up call says fill that time)
    and the sample is their mean: a single call of some tens of microseconds
    is mostly timer and scheduling noise.
    """
    calls = {name: 1 for name in runners}
    for _ in range(warmup):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            elapsed = 1e3 * (time.perf_counter() - start)
            calls[name] = max(1, math.ceil(min_sample_ms / max(elapsed, 1e-6)))
    times = {name: [] for name in runners}
    names = list(runners)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            for _ in range(calls[name]):
                runners[name]()
            times[name].append((time.perf_counter() - start) / calls[name])
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}
