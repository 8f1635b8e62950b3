"""The k-th call after a 0.1 s pause, per engine (DistilBERT-base, 2 threads, batch 1, sequence 128),
in one process, 12 rounds: how long after a pause an engine takes to reach its back-to-back speed.
Usage: python results/bench/zen5-warm/ramp.py
"""
import os
import time

os.environ["OMP_NUM_THREADS"] = "2"
import numpy as np

from workbench.bench.in_process import bench_engine

K = 12
engs = {name: bench_engine(name) for name in ("ort-int8-plain-pt", "wb-int8", "wb-int8-sp90")}
res = {n: [] for n in engs}
for r in range(12):
    for n, (eng, f) in engs.items():
        time.sleep(0.1)
        ts = []
        for k in range(K):
            t = time.perf_counter()
            eng.run(f)
            ts.append(time.perf_counter() - t)
        res[n].append(ts)
for n, v in res.items():
    v = np.median(np.array(v), axis=0) * 1e3
    print(f"{n:20s} call after pause 1..{K} (median ms): " + " ".join(f"{x:.2f}" for x in v))
