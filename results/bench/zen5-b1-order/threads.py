"""Control for ab.py: is the far placement's slowdown of the sparse engines at batch 1 a cost of
the two threads working across dies (data or synchronisation crossing), or of the die itself
(its clock, its L3)? Each round measures the round trip between the vCPUs, then times each
engine on 2 threads and on 1 thread (0.4 s each, medians), in turns. A slowdown that only the
2-thread runs show in far rounds is a cost of crossing.
Usage: python threads.py [ROUNDS] [ENGINE ...]"""
import os, sys
os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
from workbench.bench.in_process import bench_engine
from timing import alternating_rounds, by_placement
from workbench_ext import cpu

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
names = sys.argv[2:] or ["wb-int8", "wb-int8-sp90"]
eng = {n: bench_engine(n, 1) for n in names}
rows = alternating_rounds(rounds, eng, (2, 1), cpu.set_num_threads, lambda r, row: (
    f"round {r:2d} trip {row['trip']:4.0f} ns  " + "  ".join(
        f"{n} t2 {row[n, 2]:.3f} t1 {row[n, 1]:.3f} ms" for n in names)))
cpu.set_num_threads(2)
med = {}
for label, sel in by_placement(rows):
    for n in names:
        for nt in (2, 1):
            med[label, n, nt] = float(np.median(np.array([x[n, nt] for x in rows])[sel]))
    print(f"{label} ({sel.sum()} rounds): " + "; ".join(
        f"{n} t2 {med[label, n, 2]:.3f} ms, t1 {med[label, n, 1]:.3f} ms" for n in names))
if {label for label, _, _ in med} == {"near", "far"}:
    print("far / near: " + "; ".join(
        f"{n} t2 {med['far', n, 2] / med['near', n, 2]:.3f}x, t1 {med['far', n, 1] / med['near', n, 1]:.3f}x"
        for n in names))
