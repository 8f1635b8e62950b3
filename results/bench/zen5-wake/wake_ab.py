"""The first forward after a pause with and without the pool woken at the forward's start
(`workbench_ext.pool.wake`, called by `Engine.__call__` before it checks the inputs), DistilBERT-
base, 2 threads, batch 1, sequence 128, in one process: per round and engine, a 0.1 s pause then
one timed forward in each mode, modes and engines taking turns; and back-to-back forwards (warm)
for reference. Prints medians in ms and each engine's pool stats (`wakes`).
Usage: python results/bench/zen5-wake/wake_ab.py [rounds]
"""
import os
import sys
import time

os.environ["OMP_NUM_THREADS"] = "2"
import numpy as np

from workbench.bench.in_process import bench_engine
from workbench.runtime import kernels as K
from workbench_ext import pool

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
engs = {name: bench_engine(name) for name in ("wb-int8", "wb-int8-sp90", "wb-int8-tile90")}
real_wake = K.wake_pool
MODES = ("wake", "no wake", "warm")
res = {(n, m): [] for n in engs for m in MODES}
cells = list(res)
w0 = pool.stats()["wakes"]
for r in range(rounds):
    k = r % len(cells)
    for n, m in cells[k:] + cells[:k]:
        eng, f = engs[n]
        K.wake_pool = real_wake if m != "no wake" else (lambda: None)
        if m == "warm":
            eng.run(f)
        else:
            time.sleep(0.1)
        t = time.perf_counter()
        eng.run(f)
        res[n, m].append(time.perf_counter() - t)
K.wake_pool = real_wake
print(f"{rounds} rounds; median ms of a forward: after a 0.1 s pause with / without the wake, and warm "
      f"(wakes that found a worker asleep: {pool.stats()['wakes'] - w0})")
for n in engs:
    a, b, w = (np.median(res[n, m]) * 1e3 for m in MODES)
    print(f"{n:16s} wake {a:6.2f}  no wake {b:6.2f}  (saved {b - a:+.2f} ms, {b / a:.3f}x)  warm {w:6.2f}", flush=True)
