"""Which parallel jobs of the compiled batch-1 forward does the far placement slow? Each round
measures the round trip between the vCPUs, then runs FORWARDS forwards of the engine inside
`workbench_ext.pool.trace()`, which times every job of the pool (start, end, chunks). A forward
runs the same jobs in the same order every time, so job i of one forward is job i of every
other: per job index, the median duration in near and in far rounds, and the serial time
between jobs. Prints every job with its chunk count, durations and the workers' share of its chunks.
Usage: python jobs.py [ROUNDS] [FORWARDS] [ENGINE]"""
import os, sys
os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
from workbench.bench.in_process import bench_engine
from timing import far_mask
from workbench.bench.placement import round_trip_ns
from workbench_ext import pool

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
forwards = int(sys.argv[2]) if len(sys.argv) > 2 else 50
name = sys.argv[3] if len(sys.argv) > 3 else "wb-int8-sp90"
e, feed = bench_engine(name, 1)
with pool.trace() as t:
    e.run(feed)
per = len(t.jobs)
chunks = t.jobs["chunks"].copy()
trips, durs, gaps, totals, shares = [], [], [], [], []
for r in range(rounds):
    trips.append(round_trip_ns())
    with pool.trace(per * forwards + 10) as t:
        for _ in range(forwards):
            e.run(feed)
    j = t.jobs
    assert len(j) == per * forwards, (len(j), per, forwards)
    s, en = j["start_ns"].reshape(forwards, per), j["end_ns"].reshape(forwards, per)
    durs.append(np.median(en - s, axis=0) / 1e3)                     # us per job index
    gaps.append(np.median(s[:, 1:] - en[:, :-1], axis=0) / 1e3)     # serial us before job i+1
    totals.append(np.median(en[:, -1] - s[:, 0]) / 1e3)
    shares.append(np.median(j["by_workers"].reshape(forwards, per) / j["chunks"].reshape(forwards, per), axis=0))
    print(f"round {r:2d} trip {trips[-1]:4.0f} ns  first-to-last job {totals[-1]:.0f} us  "
          f"in jobs {durs[-1].sum():.0f} us  between {gaps[-1].sum():.0f} us", flush=True)
trips, durs, gaps, totals, shares = map(np.array, (trips, durs, gaps, totals, shares))
far = far_mask(trips)
if not (far.any() and (~far).any()):
    sys.exit(f"one placement only: {far.sum()} far rounds of {rounds}")
dn, df = np.median(durs[~far], axis=0), np.median(durs[far], axis=0)
gn, gf = np.median(gaps[~far], axis=0), np.median(gaps[far], axis=0)
print(f"{name}: {per} jobs per forward; {(~far).sum()} near / {far.sum()} far rounds")
print(f"first to last job: near {np.median(totals[~far]):.0f} us, far {np.median(totals[far]):.0f} us")
print(f"inside jobs: near {dn.sum():.0f} us, far {df.sum():.0f} us (+{df.sum() - dn.sum():.0f}); "
      f"between jobs: near {gn.sum():.0f} us, far {gf.sum():.0f} us (+{gf.sum() - gn.sum():.0f})")
# jobs of a layer repeat with the layer: group job indices by their position in the layer
print("every job in forward order: index, chunks, near us, far us, far / near, workers' share near / far")
wn, wf = np.median(shares[~far], axis=0), np.median(shares[far], axis=0)
for i in range(per):
    print(f"  {i:3d} {chunks[i]:5d} {dn[i]:7.1f} {df[i]:7.1f} {df[i] / dn[i]:6.2f}x  {wn[i]:.2f} / {wf[i]:.2f}")
