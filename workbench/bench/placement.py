"""Where the host had our two CPUs during a bench: the cache-line round trip between them, before
every round of interleaved timing.

On the 2-vCPU cloud machines this project is measured on, the host moves the two vCPUs between
dies for minutes at a time: a cache line's round trip goes from ~60-100 ns (one die) to
~330-420 ns (two), and every engine's batch-1 forward slows with it, each by its own factor
(Zen 5, results/bench/zen5-spread/: ONNX Runtime int8 1.32x, our dense int8 1.14x, 90 % sparse
1.38x). A bench whose rounds straddle such a move has a wider spread for reasons outside the
engines; recording the round trip per round shows it (`round_trip_ns_runs`, in round order,
beside `latency_ms_runs`), and the README's spread section says when the placement changed.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from workbench.bench.spread import per_run

FIELD = "round_trip_ns_runs"
ITERS = 5000
"""Round trips per measurement (~0.5-2 ms); each reading is the best of `TRIES`."""
TRIES = 3
FAR_FACTOR = 3.0
"""A panel's placement changed when its slowest round trip is this many times its fastest: one
die against two differ 4-6x (Zen 4: 58 / 331 ns, Zen 5: ~90 / ~400), while within one placement
the readings before the rounds of one bench spread up to 2.7x (Zen 5: 51-138 ns,
results/bench/zen5-repeat2/)."""


def cpu_pair() -> tuple[int, int] | None:
    """The first two CPUs this process may run on, or None with fewer than two."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return None
    return (cpus[0], cpus[1]) if len(cpus) >= 2 else None


def round_trip_ns(pair: tuple[int, int] | None = None) -> float | None:
    """The cache-line round trip between `pair` (default `cpu_pair()`) now, in ns (best of
    `TRIES`); None when there is no pair, the compiled extension is missing, or the threads
    cannot be pinned there (a container's CPU set narrower than the affinity mask): the bench
    then records no placement rather than failing."""
    pair = pair or cpu_pair()
    if pair is None:
        return None
    try:
        from workbench_ext import cpu

        return min(cpu.line_round_trip_ns(pair[0], pair[1], ITERS) for _ in range(TRIES))
    except (ImportError, ValueError):
        return None


def format_trips(trips: list[float | None]) -> str:
    """Round trips as the CSV cell: ns joined by ';' in round order ('' for a round without)."""
    return ";".join("" if t is None else f"{t:.0f}" for t in trips)


def trips_of(row: dict[str, Any]) -> list[float]:
    """A row's recorded round trips in ns (empty when none)."""
    return per_run(row, FIELD)


def far_rounds(trips: Sequence[float]) -> list[bool]:
    """Per round, whether the vCPUs were on different dies: its round trip at least
    `FAR_FACTOR` x the fastest of `trips` (so all False when the placement held)."""
    fastest = min(trips, default=0.0)
    return [t >= FAR_FACTOR * fastest for t in trips]


def placement_lines(rows: list[dict[str, Any]]) -> list[str]:
    """README lines: per panel (model, threads, batch) the range of the round trips over its
    rounds, and whether the placement changed during them (`FAR_FACTOR`)."""
    panels: dict[tuple, list[float]] = {}
    for r in rows:
        trips = trips_of(r)
        if trips:
            panels.setdefault((r["model"], r["threads"], r["batch"]), trips)
    if not panels:
        return []
    parts, changed = [], []
    for (model, threads, batch), trips in panels.items():
        where = f"{model} t={threads} b={batch}"
        parts.append(f"{where} {min(trips):.0f}-{max(trips):.0f} ns")
        if any(far_rounds(trips)):
            changed.append(where)
    return ["Cache-line round trip between the first two CPUs before each round (`" + FIELD + "`; up to ~140 ns: "
            "one die, ~330-420 ns: two, on the cloud VMs measured so far): " + "; ".join(parts) + ". "
            + ("The host moved the CPUs during " + ", ".join(changed) + ": every engine's runs there "
               "mix two placements, so their spread is partly the machine's (the per-round ratios "
               "cancel it)." if changed else "The placement held through every panel."), ""]
