"""One process of the pool-layout A/B (run.sh): ROUNDS rounds of the batch-1 forward on 2
threads, each round the round trip between the vCPUs, then 0.4 s of each engine (median ms).
Prints one line per round: trip ns, then ms per engine.
Usage: python rounds.py ROUNDS ENGINE..."""
import os, sys, time
os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
from workbench.bench.in_process import bench_engine
from workbench.bench.placement import round_trip_ns

rounds, names = int(sys.argv[1]), sys.argv[2:]
eng = [bench_engine(n, 1) for n in names]
for r in range(rounds):
    cells = [f"{round_trip_ns():.0f}"]
    for e, feed in (eng if r % 2 == 0 else eng[::-1]):
        ts = []; t1 = time.time()
        while time.time() - t1 < 0.4:
            t = time.perf_counter(); e.run(feed); ts.append(time.perf_counter() - t)
        cells.append(f"{np.median(ts) * 1e3:.4f}")
    if r % 2:
        cells[1:] = cells[1:][::-1]
    print(" ".join(cells), flush=True)
