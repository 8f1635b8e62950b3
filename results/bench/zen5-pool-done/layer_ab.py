"""The pool's `done` counter on single layers: the 1x4 block-sparse int8 layer at 90 % at
DistilBERT's three batch-1 shapes, 2 threads, 64-byte-aligned output (as the compiled encoder's),
the two settings taking turns for 40 rounds of 20 calls; prints each one's median and the median
of the per-round ratios per-chunk / per-thread (> 1: the default, per-thread, is faster).

    python results/bench/zen5-pool-done/layer_ab.py
"""
import time

import numpy as np

from workbench.bench.gemm import _block_sparse
from workbench_ext import int8, pool
rng = np.random.default_rng(0)
for k, n in ((768, 3072), (3072, 768), (768, 2304)):
    x = rng.standard_normal((128, k)).astype(np.float32)
    w = _block_sparse(rng.integers(-127, 128, size=(n, k)).astype(np.int8), 0.9, rng)
    layer = int8.BlockSparseInt8Linear(w, np.full(n, 0.01, np.float32), None, isa="avx512_vnni")
    buf = np.empty(128 * n * 4 + 64, np.uint8); off = (-buf.ctypes.data) % 64
    out = buf[off:off + 128 * n * 4].view(np.float32).reshape(128, n)
    res = {False: [], True: []}
    for r in range(40):
        for s in ((False, True) if r % 2 else (True, False)):
            pool._set_done_per_chunk(s)
            for _ in range(5): layer(x, num_threads=2, out=out)
            t = time.perf_counter()
            for _ in range(20): layer(x, num_threads=2, out=out)
            res[s].append((time.perf_counter() - t) / 20)
    pool._set_done_per_chunk(False)
    a, b = np.array(res[False]), np.array(res[True])
    print(f"128x{k}x{n}: per-thread {np.median(a)*1e6:.1f} us, per-chunk {np.median(b)*1e6:.1f} us, ratio {np.median(b/a):.3f}")
