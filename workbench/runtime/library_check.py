"""The library kernel's picks, checked on whole forwards: `measure` keeps them only if the engine
runs faster with them than without.

A Linear timed alone (`choice._timed`) does not show what the library kernel (torch's `_int_mm`,
`int8_library`) costs inside a forward: its calls hand the cores from this package's pool to
torch's OpenMP threads and back around every such layer. On the Zen 4 development machine (2
threads, batch 1), isolated timings in one bench kept it for 5 of MiniLM's 24 Linears and 1 of
DistilBERT's even at a 25 % margin, and those engines ran whole forwards in 6.30 and 16.35 ms
against 4.77 and 15.50 all on our dense kernel (same process, taking turns, medians of 60;
results/bench/zen4-library/README.md). So after the per-layer choice, when any layer picked it, both
engines -- as chosen, and with those layers on the dense kernel -- run whole forwards at each
timed shape, taking turns (`TIMED_CALLS` rounds, each one's fastest call counts), and the
library picks stay only if the engine with them is faster by `choice.MARGIN` summed over the
shapes. The outcome is kept in the engine meta (`library_check`) and every reverted layer's
choice says so.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Callable

import numpy as np

from workbench.runtime import choice as C

LIBRARY = "int8_library"


def picks(meta: dict[str, Any]) -> list[str]:
    """The Linears that run the library kernel at some row count."""
    return [n for n, lm in meta["linears"].items() if any(k == LIBRARY for _, k in C.row_ranges(lm))]


def without_library(meta: dict[str, Any]) -> dict[str, Any]:
    """A copy of `meta` with every library pick on the dense int8 kernel."""
    out = copy.deepcopy(meta)
    for name in picks(out):
        lm = out["linears"][name]
        if lm["kind"] == LIBRARY:
            lm["kind"] = "int8_dense"
        for entry in (lm.get("choice") or {}).get("by_rows") or []:
            if entry["kind"] == LIBRARY:
                entry["kind"] = "int8_dense"
    return out


def time_forward(label: str, engine: Any, ids: np.ndarray, mask: np.ndarray) -> float:
    """Seconds of one forward. (Tests replace this function with a fake timer.)"""
    t0 = time.perf_counter()
    engine(ids, mask)
    return time.perf_counter() - t0


def check(engine: Any, shapes: list[tuple[int, int]],
          build: Callable[[dict[str, Any], dict[str, np.ndarray]], Any]) -> Any:
    """`engine` as chosen, or the same engine without its library picks (made by
    `build(meta, tensors)`) when they do not make whole forwards at `shapes` ((batch, seq) each)
    faster."""
    names = picks(engine.meta)
    if not names:
        return engine
    engines = {"with": engine, "without": build(without_library(engine.meta), engine.tensors)}
    rng = np.random.default_rng(0)
    best = {k: 0.0 for k in engines}
    for batch, seq in shapes:
        ids = rng.integers(0, min(int(engine.meta["vocab_size"]), 1000), (batch, seq))
        mask = np.ones_like(ids)
        fastest = {k: float("inf") for k in engines}
        for e in engines.values():
            e(ids, mask)   # warm-up: packs, buffers
        for _ in range(C.TIMED_CALLS):
            for k, e in engines.items():
                fastest[k] = min(fastest[k], time_forward(k, e, ids, mask))
        for k in engines:
            best[k] += fastest[k]
    kept = best["with"] < best["without"] * (1.0 - C.MARGIN)
    result = {"layers": names, "shapes": [list(s) for s in shapes], "kept": kept,
              "ms_with": round(best["with"] * 1e3, 4), "ms_without": round(best["without"] * 1e3, 4)}
    chosen = engines["with" if kept else "without"]
    chosen.meta["library_check"] = result
    if not kept:
        for name in names:
            chosen.meta["linears"][name]["choice"]["library_reverted"] = (
                f"whole forwards {result['ms_with']} ms with the library kernel, {result['ms_without']} without")
    return chosen


def summary(meta: dict[str, Any]) -> str:
    """One line on the check (bench notes, logs), "" when no layer picked the library kernel."""
    result = meta.get("library_check")
    if not result:
        return ""
    what = "kept" if result["kept"] else "reverted to dense"
    return (f"library kernel picks ({len(result['layers'])} Linears) {what}: whole forwards "
            f"{result['ms_with']} ms with them, {result['ms_without']} without")
