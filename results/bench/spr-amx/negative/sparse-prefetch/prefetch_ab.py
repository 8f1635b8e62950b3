"""Software prefetch of the 1x4 VNNI kernel's activations: while it multiplies a column's block
i, prefetch the activation lines (16 x G rows, G = 4: four lines) of the column's block i + D
into L1. The hardware prefetchers cannot follow a column's blocks (their K positions are
irregular); the question is whether the kernel waits on those L2 reads. DistilBERT's four GEMM
shapes, 90 % sparse in 1x4 blocks (random pattern), D = 0 (off), 2, 4, 8, 16 taking turns, 15
rounds; median call and the speed over D = 0.

Run on a build with prefetch.patch applied, from the repository root:
.venv/bin/python results/bench/spr-amx/negative/sparse-prefetch/prefetch_ab.py 2   (threads; then 1)
"""
import os, statistics, sys
os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "emr-amx"))
import numpy as np
from amx_ab import gemm_layers, rotated
from workbench.bench.gemm import _time, _block_sparse
from workbench_ext import int8
rng = np.random.default_rng(0)
PF = [0, 2, 4, 8, 16]
nt = int(sys.argv[1]) if len(sys.argv) > 1 else 2
for k, n, x, _, out in gemm_layers(int8, "amx", rng):
    w = _block_sparse(rng.integers(-127, 128, size=(n, k)).astype(np.int8), 0.9, rng)
    layer = int8.BlockSparseInt8Linear(w, np.full(n, 0.01, np.float32), None, isa="amx")
    int8._set_spv_prefetch(0); ref = layer(x, num_threads=nt).copy()
    for p in PF:
        int8._set_spv_prefetch(p); assert np.array_equal(layer(x, num_threads=nt), ref)
    times = {p: [] for p in PF}
    for r in range(15):
        for p in rotated(PF, r):
            int8._set_spv_prefetch(p)
            times[p].append(_time(lambda: layer(x, num_threads=nt, out=out), 5, 1)[0])
    int8._set_spv_prefetch(0)
    m = {p: statistics.median(t) for p, t in times.items()}
    print(f"128x{k}x{n} t={nt}: " + "; ".join(f"pf={p} {m[p]*1e6:.0f} us ({m[0]/m[p]:.2f}x)" for p in PF), flush=True)
