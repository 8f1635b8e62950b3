"""A/B of one runtime switch, in turns, across the placements of the two vCPUs.

Every ~2.5 s window: the round trip of a cache line between the two vCPUs (pingpong.c, before
and after), then the batch-1 forward of DistilBERT-base int8 on 2 threads, dense and 80 % / 90 %
sparse (1x4 blocks), each timed for 0.4 s (median) in both modes of the switch, in an order that
rotates from window to window. Prints one line per window. The switches (``--switch``):
- ``owned``: the pool's owned ranges (wb_pool_impl.h) against one shared range;
- ``qkv``: the fused QKV's kernel handing each thread its heads' columns at batch 1
  (encoder.pyx, col_segments 3) against the kernel's own order;
Measured and dropped (--summarize still reads their files; the README): ``rows``, every
Linear's kernel giving each thread its own rows (at 6e5c63f, rows_ab*.txt); ``steal``, a thread
done with its range taking the other's chunks only after 20 us (steal_ab.txt); ``fused``, the
sparse layers quantizing and packing their activations in one parallel loop instead of two (at
877669e plus that change, fused_ab.txt); ``lnq``, the LayerNorms quantizing their rows for the FFN
input and the next QKV in their own loop (at e457579 plus that change, lnq_ab.txt).
Usage: python results/bench/zen4-spread/affinity_ab.py [--switch owned] [--seconds 300] > affinity_ab.txt
       python results/bench/zen4-spread/affinity_ab.py --summarize affinity_ab.txt
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from phases import NEAR_NS, batch1_engines, pingpong_lib, round_trip_ns  # noqa: E402

SPARSITY = {"dense": 0.0, "sp80": 0.8, "sp90": 0.9}
# switch -> (the new mode, the old one): the modes' names head the output's columns
SWITCHES = {"owned": ("owned", "shared"), "qkv": ("heads", "own")}
DROPPED_SWITCHES = {"rows": ("rows", "kernel"), "steal": ("late", "now"), "fused": ("fused", "apart"),
                    "lnq": ("lnq", "apart")}   # outputs of switches since removed, for --summarize


def set_mode(switch: str, mode: str) -> None:
    from workbench_ext import encoder, pool

    if switch == "owned":
        pool._set_owned_ranges(mode == "owned")
    else:
        encoder._set_qkv_by_heads(mode == "heads")


def summarize(path: str) -> None:
    """The tables of the README from a run's output:
    - per placement (a window is far when the round trip at either end passed 150 ns), the median
      of each cell and, per engine, the paired ratio old / new mode (the two modes of an engine are
      timed back to back, so the pair mostly shares a placement even where the window does not);
    - per cell over all windows, its two modes: the values below and above the midpoint of its
      5th and 95th percentiles (the placement changes within windows; each cell is split on its
      own values, not on the other mode's)."""
    with open(path) as f:
        header = f.readline().split()
        rows = np.array([line.split() for line in f if line[:1].isdigit()], float)
    col = {h: i for i, h in enumerate(header)}
    modes = {**SWITCHES, **DROPPED_SWITCHES}.values()
    new, old = next(m for m in modes if f"dense_{m[0]}_ms" in col)
    print(f"placement windows engine {new}_ms {old}_ms {old}/{new}_paired (IQR)")
    for name, sel in (("near", rows[:, 0] < NEAR_NS), ("far", rows[:, 0] >= NEAR_NS)):
        if not sel.any():
            print(f"{name} 0 (no window)")
            continue
        for e in SPARSITY:
            owned, shared = rows[sel, col[f"{e}_{new}_ms"]], rows[sel, col[f"{e}_{old}_ms"]]
            r = shared / owned
            print(f"{name} {int(sel.sum())} {e} {np.median(owned):.2f} {np.median(shared):.2f} "
                  f"{np.median(r):.3f} ({np.percentile(r, 25):.2f}-{np.percentile(r, 75):.2f})")
    print("cell fast_mode_ms slow_mode_ms slow_share")
    for h in header[1:]:
        v = rows[:, col[h]]
        cut = float(np.mean(np.percentile(v, [5, 95])))
        print(f"{h} {np.median(v[v < cut]):.2f} {np.median(v[v >= cut]):.2f} {np.mean(v >= cut):.2f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--switch", choices=sorted(SWITCHES), default="owned")
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--window", type=float, default=0.4, help="seconds per engine and mode")
    p.add_argument("--summarize", metavar="FILE", help="print the README's tables from a run's output")
    a = p.parse_args()
    if a.summarize:
        summarize(a.summarize)
        return
    engines, ids, mask = batch1_engines(SPARSITY)
    lib = pingpong_lib()
    cells = [(e, m) for e in engines for m in SWITCHES[a.switch]]

    def timed(eng, mode: str) -> float:
        set_mode(a.switch, mode)
        eng(ids, mask)                                # untimed: the mode's first job
        ts, t1 = [], time.time()
        while time.time() - t1 < a.window:
            t = time.perf_counter()
            eng(ids, mask)
            ts.append(time.perf_counter() - t)
        return float(np.median(ts)) * 1e3

    print("pingpong_ns " + " ".join(f"{e}_{m}_ms" for e, m in cells), flush=True)
    end, turn = time.time() + a.seconds, 0
    while time.time() < end:
        before = round_trip_ns(lib)
        order = cells[turn % len(cells):] + cells[:turn % len(cells)]
        ms = {c: timed(engines[c[0]], c[1]) for c in order}
        after = round_trip_ns(lib)
        print(f"{max(before, after):.0f} " + " ".join(f"{ms[c]:.2f}" for c in cells), flush=True)
        turn += 1
    set_mode(a.switch, SWITCHES[a.switch][0])


if __name__ == "__main__":
    main()
