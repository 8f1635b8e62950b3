"""A/B of the pool's owned ranges (wb_pool_impl.h) against one shared range, in turns.

Every ~2.5 s window: the round trip of a cache line between the two vCPUs (pingpong.c, before
and after), then the batch-1 forward of DistilBERT-base int8 on 2 threads, dense and 80 % / 90 %
sparse (1x4 blocks), each timed for 0.4 s (median) with the pool's owned ranges on and off, in
an order that rotates from window to window. Prints one line per window.
Usage: python results/bench/zen4-spread/affinity_ab.py [--seconds 300] > affinity_ab.txt
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from phases import batch1_engines, pingpong_lib  # noqa: E402

SPARSITY = {"dense": 0.0, "sp80": 0.8, "sp90": 0.9}
MODES = ("owned", "shared")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--window", type=float, default=0.4, help="seconds per engine and mode")
    a = p.parse_args()
    engines, ids, mask = batch1_engines(SPARSITY)
    from workbench_ext import pool

    lib = pingpong_lib()
    cells = [(e, m) for e in engines for m in MODES]

    def timed(eng, mode: str) -> float:
        pool._set_owned_ranges(mode == "owned")
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
        before = min(lib.pingpong(20000) for _ in range(3))
        order = cells[turn % len(cells):] + cells[:turn % len(cells)]
        ms = {c: timed(engines[c[0]], c[1]) for c in order}
        after = min(lib.pingpong(20000) for _ in range(3))
        print(f"{max(before, after):.0f} " + " ".join(f"{ms[c]:.2f}" for c in cells), flush=True)
        turn += 1
    pool._set_owned_ranges(True)


if __name__ == "__main__":
    main()
