"""Gaps between the pool's parallel jobs in batch-1 DistilBERT forwards (1x4 blocks at `sys.argv[1]` sparsity):
forward median, one traced forward job by job (chunks, us, gap before), the median gap per position.
Usage: python results/bench/spr-amx/call-overhead/job_gaps.py 0.9"""
import sys, time, numpy as np
sys.path.insert(0, "results/bench/emr-amx")
from forward_breakdown import _engine
import workbench_ext.pool as pool
sp = float(sys.argv[1]) if len(sys.argv) > 1 else 0.9
eng = _engine(sp, (1, 4))
ids = np.random.default_rng(0).integers(1000, 20000, (1, 128)); mask = np.ones((1, 128), np.int64)
for _ in range(20): eng(ids, mask)
ts = []
for _ in range(30):
    t = time.perf_counter(); eng(ids, mask); ts.append(time.perf_counter() - t)
print("forward ms median", np.median(ts) * 1e3)
allg = []
for rep in range(20):
    with pool.trace() as t:
        t0 = time.monotonic_ns(); eng(ids, mask); t1 = time.monotonic_ns()
    j = t.jobs
    dur = (j["end_ns"] - j["start_ns"]) / 1e3
    gaps = (j["start_ns"][1:] - j["end_ns"][:-1]) / 1e3
    allg.append(np.concatenate([[ (j["start_ns"][0]-t0)/1e3], gaps, [(t1 - j["end_ns"][-1])/1e3]]))
    if rep == 19:
        print("jobs", len(j), "total us", (t1 - t0) / 1e3, "in jobs", dur.sum(), "gaps", gaps.sum())
        for i in range(len(j)):
            print(i, j["chunks"][i], round(dur[i], 1), round(allg[-1][i], 1))
g = np.median(np.array(allg), axis=0)
print("median gaps sum", g.sum(), "first", g[0], "last", g[-1])
print("median gap per index:", np.round(g, 1).tolist())
