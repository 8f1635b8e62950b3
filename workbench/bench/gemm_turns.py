"""Timing the GEMM microbenchmark's cells (`workbench.bench.gemm`) in turns, in one process.

A cell is one kernel at one thread count. After every cell's warm-up, round r times each cell once,
starting at cell r (mod the number of cells), so a drift of the shared machine's speed lands on
every cell of a round alike and a ratio of two cells compares the same minutes. `vs_dense` reads
such a ratio round by round.

Each timed call follows an untimed call of the same cell, as the engine bench's turns start
(`workbench.bench.interleave`; there untimed calls go on for `worker.WARM_S`, but a cell's turn
has no pause before it to recover from): meanwhile the previous cell's idle threads stop
spinning, and this cell's own threads are awake when its timed call starts, as in back-to-back
calls. Without it a 2-thread call first had to wake a pool worker that had gone to sleep, and
its median on a 2-vCPU VM was 1.4-2.5x its best.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable


def _time(fn: Callable[[], Any], repeats: int, warmup: int) -> tuple[float, float]:
    """(median, min) seconds of `repeats` back-to-back calls after `warmup` (one kernel alone;
    the forward-breakdown and A/B scripts of results/bench use it)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


@dataclass
class _Cell:
    """One kernel at one thread count: what to call, and what its row says."""

    kernel: str
    isa: str
    threads: int
    call: Callable[[], Any]
    peak: float
    note: str
    sparsity: float = 0.0
    nnz: Any = ""
    max_runs: int | None = None   # a slow reference kernel is timed fewer times, without warm calls
    prepare: Callable[[], Any] | None = None   # run untimed before each timed call
    times: list[float] = field(default_factory=list)


def _time_in_turns(cells: list[_Cell], repeats: int, warmup: int) -> None:
    """Warm every cell up, then time the cells in turns (see the module docstring) into
    `cell.times`, one entry per round the cell ran in."""
    for c in cells:
        for _ in range(warmup if c.max_runs is None else 0):
            c.call()
    for r in range(max(1, repeats)):
        k = r % len(cells)
        for c in cells[k:] + cells[:k]:
            if c.max_runs is not None and len(c.times) >= c.max_runs:
                continue
            if c.prepare is not None:
                c.prepare()
            if c.max_runs is None:
                c.call()   # untimed: see the module docstring
            t0 = time.perf_counter()
            c.call()
            c.times.append(time.perf_counter() - t0)


def _vs_dense(cell: _Cell, dense: _Cell | None) -> float | str:
    """Median over the rounds both ran in of dense time / this cell's time (same round)."""
    if dense is None or not cell.times:
        return ""
    n = min(len(cell.times), len(dense.times))
    return round(statistics.median(d / t for d, t in zip(dense.times[:n], cell.times[:n])), 3)
