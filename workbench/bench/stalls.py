"""Rounds in which the machine, not an engine, was slow.

With interleaved timing (`workbench.bench.interleave`) every engine of a panel (model, threads,
batch) runs once per round, so a stall of the shared machine lasting a round or more slows every
engine of those rounds alike. The per-round ratios cancel it. The medians do not: with 7 runs, an
engine that happened to meet the stall in 4 of its turns has its median moved, and one that met
it in 3 has not. In one item-7 repeat on the Zen 5 (`results/bench/zen5-repeat3/`, run 3), rounds
3-5 ran ~1.7x slow for every engine, and the 80 % engine, slow in its round 2 as well, moved 41 %
between runs while ORT moved 5 %. The README's spread section names such rounds (`stall_lines`),
so a reader can tell the machine's spread from an engine's.
"""
from __future__ import annotations

import statistics
from typing import Any

from workbench.bench.spread import run_times

STALL_FACTOR = 1.3
"""A round is the machine's stall when the median engine's run in it is at least this many times
that engine's own median run."""
MIN_ENGINES = 3
"""Engines a round must have been timed on to be judged: with two, one slow engine is half."""


def round_factors(rows: list[dict[str, Any]]) -> list[float]:
    """One panel's rows -> per round, the median over its engines of (the engine's run in that
    round / the engine's median run); 1.0 for a round fewer than `MIN_ENGINES` engines ran, and
    no rounds at all when the panel has fewer such engines."""
    runs = [t for t in (run_times(r) for r in rows) if len(t) >= 2]
    if len(runs) < MIN_ENGINES:
        return []
    medians = [statistics.median(t) for t in runs]
    factors = []
    for k in range(max(len(t) for t in runs)):
        f = [t[k] / m for t, m in zip(runs, medians) if k < len(t)]
        factors.append(statistics.median(f) if len(f) >= MIN_ENGINES else 1.0)
    return factors


def stalled_rounds(factors: list[float]) -> list[int]:
    """The rounds (1-based) whose factor is at least `STALL_FACTOR`."""
    return [k + 1 for k, f in enumerate(factors) if f >= STALL_FACTOR]


def stall_lines(rows: list[dict[str, Any]]) -> list[str]:
    """README lines: per panel the rounds in which every engine ran slow, or that none did."""
    panels: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        panels.setdefault((r.get("model"), r.get("threads"), r.get("batch")), []).append(r)
    judged, parts = 0, []
    for (model, threads, batch), panel in panels.items():
        factors = round_factors(panel)
        judged += bool(factors)
        stalled = stalled_rounds(factors)
        if stalled:
            worst = max(factors[k - 1] for k in stalled)
            parts.append(f"{model} t={threads} b={batch} round{'s' if len(stalled) > 1 else ''} "
                         f"{', '.join(map(str, stalled))} (up to {worst:.2f}x)")
    if not judged:
        return []
    head = (f"Rounds in which the machine stalled (the median engine's run at least {STALL_FACTOR:g}x its "
            "own median): ")
    if not parts:
        return [head + "none.", ""]
    return [head + "; ".join(parts) + ". An engine's median moves with such rounds when it met them in "
            "more than half of its runs; the per-round ratios cancel them.", ""]
