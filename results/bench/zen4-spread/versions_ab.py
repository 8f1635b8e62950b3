"""One checkout's batch-1 forward, split by the vCPUs' placement, to compare two versions of the
code run in turns (each from its own clone, with its own build).

For 25 s: windows of the cache-line round trip (pingpong.c), 0.5 s of forwards of DistilBERT-base
int8 (2 threads, 1x4 block-sparse at --sparsity), the round trip again; a window counts as near
(far) when both round trips are under (over) 150 ns, and is dropped when they differ. Prints the
median forward per placement and the number of windows.
Usage, from each clone in turns: python results/bench/zen4-spread/versions_ab.py [--sparsity 0.9]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from phases import one_warm_engine, placement, round_trip_ns  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--seconds", type=float, default=25)
    a = p.parse_args()
    engine, ids, mask, lib = one_warm_engine(a.sparsity)
    windows: dict[str, list[float]] = {"near": [], "far": []}
    end = time.time() + a.seconds
    while time.time() < end:
        before = round_trip_ns(lib)
        ts, t1 = [], time.time()
        while time.time() - t1 < 0.5:
            t = time.perf_counter()
            engine(ids, mask)
            ts.append(time.perf_counter() - t)
        place = placement(before, round_trip_ns(lib))
        if place:
            windows[place].append(float(np.median(ts)) * 1e3)
    print(" ".join(f"{k} {np.median(v):.2f} ms (n={len(v)})" if v else f"{k} - (n=0)"
                   for k, v in windows.items()), flush=True)


if __name__ == "__main__":
    main()
