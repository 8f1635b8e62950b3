"""Is one of the two vCPUs slower in the far placement? Each round measures the round trip, then
runs the engines' batch-1 forward on one thread pinned to the first vCPU and to the second in
turns (0.4 s each, medians). If the two agree in near rounds but one is slower in far ones, the
far placement's cost is a slower core (a busy sibling thread, a slower clock), which two threads
inherit from the slower of the two, not a cost of the threads talking across dies.
Usage: python cpus.py [ROUNDS] [ENGINE ...]"""
import os, sys
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
from workbench.bench.in_process import bench_engine
from timing import alternating_rounds, by_placement
from workbench.bench.placement import cpu_pair
from workbench_ext import cpu

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
names = sys.argv[2:] or ["wb-int8", "wb-int8-sp90"]
pair = cpu_pair()
allowed = os.sched_getaffinity(0)
eng = {n: bench_engine(n, 1, threads=1) for n in names}
cpu.set_num_threads(1)
rows = alternating_rounds(
    rounds, eng, tuple(pair), lambda c: os.sched_setaffinity(0, {c}),
    lambda r, row: f"round {r:2d} trip {row['trip']:4.0f} ns  " + "  ".join(
        f"{n} " + "/".join(f"cpu{c} {row[n, c]:.3f}" for c in pair) for n in names),
    before=lambda: os.sched_setaffinity(0, allowed))   # the round trip needs both vCPUs
os.sched_setaffinity(0, allowed)
for label, sel in by_placement(rows):
    cells = []
    for n in names:
        a = np.array([x[n, pair[0]] for x in rows])[sel]; b = np.array([x[n, pair[1]] for x in rows])[sel]
        cells.append(f"{n} cpu{pair[0]} {np.median(a):.3f} ms, cpu{pair[1]} {np.median(b):.3f} ms "
                     f"(cpu{pair[1]} / cpu{pair[0]} {np.median(b / a):.3f}x, {np.min(b / a):.2f}-{np.max(b / a):.2f})")
    print(f"{label} ({sel.sum()} rounds): " + "; ".join(cells))
