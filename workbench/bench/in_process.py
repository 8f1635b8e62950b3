"""Timing callables against each other in one process, taking turns (the results scripts' A/B
runs: `results/bench/zen4-packed/`, `results/bench/zen4-dynamic/`)."""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence


def time_in_turns(runners: dict[str, Callable[[Any], Any]], batches: Sequence[Any], rounds: int,
                  pause_s: float = 0.1, warm_s: float | None = None) -> dict[str, list[float]]:
    """Seconds per pass over `batches`, per runner and round. Each round every runner takes one
    turn -- a `pause_s` pause (the previous runner's threads stop spinning), untimed calls on the
    first batch for `warm_s` (default: the bench's `worker.WARM_S`; at least one call), then all
    of `batches` timed -- in an order rotated by one each round, so a drift of a shared machine's
    speed hits every runner alike."""
    if warm_s is None:
        from workbench.bench.worker import WARM_S as warm_s
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            time.sleep(pause_s)
            t0 = time.perf_counter()
            runners[name](batches[0])
            while time.perf_counter() - t0 < warm_s:
                runners[name](batches[0])
            t0 = time.perf_counter()
            for b in batches:
                runners[name](b)
            times[name].append(time.perf_counter() - t0)
    return times
