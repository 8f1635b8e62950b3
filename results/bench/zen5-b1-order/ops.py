"""Which ops does the far placement slow? Each round measures the round trip between the vCPUs,
then times the engines' forward op by op (batch 1, 2 threads; each Linear by role and the
attention wrapped in a timer, `forward_breakdown._op_by_op` of ../emr-amx/), REPS forwards per
engine per round. The per-op medians are then split into near and far rounds.
Usage: python ops.py [ROUNDS] [REPS] [ENGINE ...]"""
import importlib.util, os, sys
from pathlib import Path
os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
from workbench.bench.in_process import bench_engine
from timing import far_mask
from workbench.bench.placement import round_trip_ns

spec = importlib.util.spec_from_file_location(
    "forward_breakdown", Path(__file__).resolve().parent.parent / "emr-amx" / "forward_breakdown.py")
fb = importlib.util.module_from_spec(spec); spec.loader.exec_module(fb)

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 60
names = sys.argv[3:] or ["wb-int8", "wb-int8-sp90"]
eng = {n: bench_engine(n, 1) for n in names}
rows = []
for r in range(rounds):
    row = {"trip": round_trip_ns()}
    for n, (e, feed) in eng.items():
        row[n] = fb._op_by_op(e.engine, feed[0], feed[1], reps)
    rows.append(row)
    print(f"round {r:2d} trip {row['trip']:4.0f} ns  " + "  ".join(
        f"{n} " + " ".join(f"{k} {v:.3f}" for k, v in row[n].items()) for n in names), flush=True)
trips = np.array([x["trip"] for x in rows])
far = far_mask(trips)
if far.any() and (~far).any():
    for n in names:
        print(f"{n} ({(~far).sum()} near, {far.sum()} far rounds): ms near / far / far minus near")
        for k in rows[0][n]:
            v = np.array([x[n][k] for x in rows])
            a, b = np.median(v[~far]), np.median(v[far])
            print(f"  {k:10s} {a:7.3f} {b:7.3f} {b - a:+7.3f}")
else:
    print(f"one placement only: {far.sum()} far rounds of {len(rows)}")
