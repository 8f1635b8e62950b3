"""Latency of a call that follows a pause: what a sporadic request waits for.

With interleaved timing (`workbench.bench.interleave`) every engine's turn starts after a pause
(`worker.QUIET_S`, 0.1 s, so the previous engine's threads stop spinning), then makes untimed
calls for `worker.WARM_S` (at least one) and one timed call; the throughput columns come from the
timed, last call. The first call is timed as well: `after_pause_ms` is its median over the
rounds (the row's variant, for an engine with several). After 0.1 s idle an engine's threads are asleep and, on a VM, the vCPUs
may have been halted, cooled down or handed to other guests, so this is the latency a server
sees when requests come a few per second rather than back to back. Sequential timing
(`--sequential`) has no pauses, so the field stays empty.
"""
from __future__ import annotations

import statistics
from typing import Any

from workbench.bench.spread import panel_tables

FIELD = "after_pause_ms"


def median_ms(first_calls_s: list[float]) -> float | str:
    """The CSV cell: the median first call in ms, or "" without any."""
    return round(statistics.median(first_calls_s) * 1e3, 3) if first_calls_s else ""


def after_pause_section(rows: list[dict[str, Any]], engines_order: list[str], baseline: str,
                        pause_s: float) -> list[str]:
    """README lines: per model the median first call after a pause, in ms, with the baseline's
    over it (as the throughput table's ratio: > 1 is faster than the baseline) and the engine's
    own slowdown against its warm median."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get(FIELD) not in ("", None)]
    if not ok:
        return []
    out = ["## A call after a pause", "",
           f"Each turn's untimed first call comes after a {pause_s:g} s pause, as a request does when they "
           "come a few per second: median over the rounds in ms; in parentheses "
           f"{baseline}'s median over this one (> 1: faster than {baseline}) and this one over "
           "the engine's own warm median (the throughput columns).", ""]

    def cell(e: str, r: dict[str, Any], base: dict[str, Any] | None) -> str:
        ms = float(r[FIELD])
        vs = f"{float(base[FIELD]) / ms:.2f}x, " if base is not None and e != baseline else ""
        return f"{ms:.2f} ({vs}{ms / float(r['latency_ms_median']):.2f}x warm)"

    return out + panel_tables(ok, engines_order, baseline, cell)
