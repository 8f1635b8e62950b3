"""The bench's turn both ways in the same turns: after the 0.1 s pause, the first call (untimed),
the second (what the bench timed before 2026-12-06: `old`), untimed calls until 30 ms after the
first began, then one more (`worker.WARM_S`, the bench now: `new`).  Engines (DistilBERT-base,
2 threads, batch 1, sequence 128) take turns in one process, rotating who goes first, so both
protocols see the same moments; prints each engine's medians and its ratio to ORT int8 both ways.
Usage: python results/bench/zen5-warm/paired.py [rounds]
"""
import os
import sys
import time

os.environ["OMP_NUM_THREADS"] = "2"
import numpy as np

from workbench.bench.in_process import bench_engine

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
engs = {name: bench_engine(name) for name in ("ort-int8-plain-pt", "wb-int8", "wb-int8-sp90", "wb-int8-tile90")}


def timed(eng, f) -> float:
    t = time.perf_counter()
    eng.run(f)
    return time.perf_counter() - t


old = {n: [] for n in engs}
new = {n: [] for n in engs}
names = list(engs)
for r in range(rounds):
    k = r % len(names)
    for n in names[k:] + names[:k]:
        eng, f = engs[n]
        time.sleep(0.1)
        t0 = time.perf_counter()
        eng.run(f)
        old[n].append(timed(eng, f))
        while time.perf_counter() - t0 < 0.03:
            eng.run(f)
        new[n].append(timed(eng, f))
base = "ort-int8-plain-pt"
print(f"{rounds} rounds; median ms of the timed call, and the ratio to {base} (median of per-round ratios)")
for n in names:
    o, w = np.array(old[n]), np.array(new[n])
    ro = np.median(np.array(old[base]) / o)
    rn = np.median(np.array(new[base]) / w)
    print(f"{n:20s} old (2nd call) {np.median(o) * 1e3:6.2f} ms ({ro:.2f}x)   new (after 30 ms) "
          f"{np.median(w) * 1e3:6.2f} ms ({rn:.2f}x)   old/new {np.median(o) / np.median(w):.3f}", flush=True)
