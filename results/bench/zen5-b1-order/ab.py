"""Does the far placement (the two vCPUs on different dies) slow the sparse engines at batch 1
because each thread reads all of every weight matrix? The sparse kernels hand out work items
rows outermost, so at batch 1 each of the two threads takes half the rows and *all* the weights;
with the vCPUs on two dies, each die's L3 then has to hold (or fetch) the whole model. The dense
kernel's items go columns outermost: each thread reads half of each weight matrix.
`workbench_ext.encoder._set_b1_columns(1)` gives the out-projection and FFN kernels the
columns-outermost order at batch 1 (the fused QKV already has it). This alternates the two orders
in one process for each engine, ROUNDS rounds of 0.4 s each, with the cache-line round trip
between the vCPUs before every round, so rounds can be split by placement.
Usage: python ab.py [ROUNDS] [ENGINE ...]   (prints one line per round, then a summary)"""
import os, sys
os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
from workbench.bench.in_process import bench_engine
from timing import alternating_rounds, by_placement
from workbench_ext import encoder

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
names = sys.argv[2:] or ["wb-int8", "wb-int8-sp70", "wb-int8-sp90"]
eng = {n: bench_engine(n, 1) for n in names}
for n, (e, feed) in eng.items():       # both orders give the same outputs
    encoder._set_b1_columns(0); a = e.run(feed)
    encoder._set_b1_columns(1); b = e.run(feed)
    assert np.array_equal(np.asarray(a), np.asarray(b)), n
rows = alternating_rounds(rounds, eng, (0, 1), encoder._set_b1_columns, lambda r, row: (
    f"round {r:2d} trip {row['trip']:4.0f} ns  " + "  ".join(
        f"{n} {row[n, 0]:.3f}/{row[n, 1]:.3f} ms ({row[n, 0] / row[n, 1]:.3f}x)" for n in names)))
encoder._set_b1_columns(0)
for label, sel in by_placement(rows):
    parts = []
    for n in names:
        own = np.array([x[n, 0] for x in rows])[sel]; cols = np.array([x[n, 1] for x in rows])[sel]
        ratio = own / cols
        parts.append(f"{n} rows-first {np.median(own):.3f} ms, columns-first {np.median(cols):.3f} ms, "
                     f"speed-up {np.median(ratio):.3f}x ({ratio.min():.3f}-{ratio.max():.3f})")
    print(f"{label} ({sel.sum()} rounds): " + "; ".join(parts))
