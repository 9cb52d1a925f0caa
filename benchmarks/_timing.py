"""The timing loop the benchmark scripts share: peers interleaved, medians."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def interleaved_ms(
    runners: dict[str, Callable[[], object]], repeats: int, *, warmup: int = 0
) -> dict[str, float]:
    """Median milliseconds of each runner over ``repeats`` interleaved rounds.

    Each round calls every runner once, so that drifts of a shared machine hit
    all of them alike; the order rotates from round to round, so that no runner
    always follows the same one (a pure-Python peer leaves the caches cold for
    whatever runs next). ``warmup`` untimed rounds come first (runners
    that compile on their first call need at least one). Each runner must block
    until its result is ready.
    """
    for _ in range(warmup):
        for run in runners.values():
            run()
    times = {name: [] for name in runners}
    names = list(runners)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}
