"""Which ops of a batch-1 forward slow down when the host puts the two vCPUs on different dies.
One process sets up our dense and 90 %-sparse (1x4) engines as the bench's worker does, then for
`--seconds` repeats: the cache-line round trip, op-by-op timing of each engine (each Linear by role
and the attention, `forward_breakdown._op_by_op`), the round trip again. Windows whose two round
trips are both near (< 150 ns) or both far (> 300 ns) are kept; prints per engine and op the
median ms near and far and their ratio.
Usage: python ops_by_placement.py [--seconds 240]"""
import argparse, os, sys, time
os.environ["OMP_NUM_THREADS"] = "2"
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emr-amx"))
import numpy as np
from forward_breakdown import _op_by_op
from workbench.bench.in_process import bench_engine
from workbench.bench.placement import round_trip_ns

p = argparse.ArgumentParser(); p.add_argument("--seconds", type=float, default=240); a = p.parse_args()
engs = {n: bench_engine(n, 1) for n in ("wb-int8", "wb-int8-sp90")}
got = {"near": {n: [] for n in engs}, "far": {n: [] for n in engs}}
t_end = time.time() + a.seconds
windows = {"near": 0, "far": 0, "moved": 0}
while time.time() < t_end:
    t0 = round_trip_ns()
    parts = {n: _op_by_op(be.engine, *feed, 10) for n, (be, feed) in engs.items()}
    t1 = round_trip_ns()
    where = "near" if max(t0, t1) < 150 else "far" if min(t0, t1) > 300 else "moved"
    windows[where] += 1
    if where != "moved":
        for n, d in parts.items():
            got[where][n].append(d)
print(f"windows: {windows}")
for n in engs:
    if not got["near"][n] or not got["far"][n]:
        print(n, "needs both placements"); continue
    print(f"\n{n}: median ms per forward, near / far / far over near")
    for k in got["near"][n][0]:
        ne = np.median([d[k] for d in got["near"][n]]); fa = np.median([d[k] for d in got["far"][n]])
        print(f"  {k:10s} {ne:6.3f} {fa:6.3f} {fa / ne:5.2f}x")
