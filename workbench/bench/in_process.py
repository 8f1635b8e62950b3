"""Timing callables against each other in one process, taking turns (the results scripts' A/B
runs: `results/bench/zen4-packed/`, `results/bench/zen4-dynamic/`)."""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence


def time_in_turns(runners: dict[str, Callable[[Any], Any]], batches: Sequence[Any], rounds: int,
                  pause_s: float = 0.1) -> dict[str, list[float]]:
    """Seconds per pass over `batches`, per runner and round. Each round every runner takes one
    turn -- a `pause_s` pause (the previous runner's threads stop spinning), one untimed batch,
    then all of `batches` timed -- in an order rotated by one each round, so a drift of a shared
    machine's speed hits every runner alike."""
    names = list(runners)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            time.sleep(pause_s)
            runners[name](batches[0])
            t0 = time.perf_counter()
            for b in batches:
                runners[name](b)
            times[name].append(time.perf_counter() - t0)
    return times
