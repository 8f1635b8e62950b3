"""Is the 90 %-sparse engine's per-process level a property of its memory (where its weights and
buffers landed) or of the period the process ran in? One process sets up three instances of the
same engine (every Linear on the 1x4 block-sparse kernel, each instance compiled on its own, so
its arrays sit elsewhere in memory), then times them in turns: 10 rounds of 0.4 s each. If the
instances differ from each other by a steady amount, the level belongs to the memory; if they
move together, to the period.
Usage: python instances.py BATCH   (run it in several processes)"""
import os, sys, time
os.environ["OMP_NUM_THREADS"] = "2"
import numpy as np
from workbench.bench import engines
from workbench.bench.in_process import bench_engine
from workbench.bench.placement import round_trip_ns

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 8
engines.Workbench.kernel_choice = "sparse"
inst = [bench_engine("wb-int8-sp90", batch) for _ in range(3)]
t0 = round_trip_ns()
res = [[] for _ in inst]
for r in range(10):
    for i in (list(range(3)) if r % 2 == 0 else [2, 1, 0]):
        eng, feed = inst[i]
        ts = []; t1 = time.time()
        while time.time() - t1 < 0.4:
            t = time.perf_counter(); eng.run(feed); ts.append(time.perf_counter() - t)
        res[i].append(np.median(ts) * 1e3)
med = [np.median(x) for x in res]
rel = [np.median(np.array(x) / np.array(res[0])) for x in res]   # per-round ratio to instance 0
print(f"instances {' '.join(f'{m:.2f}' for m in med)} ms; per round vs instance 0: "
      f"{' '.join(f'{x:.3f}' for x in rel)}; trip {t0:.0f}/{round_trip_ns():.0f} ns; "
      f"AnonHugePages {[l.split()[1] for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHuge')][0]} kB", flush=True)
