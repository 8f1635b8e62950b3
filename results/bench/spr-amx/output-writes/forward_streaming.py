"""A whole forward (DistilBERT-base shape, the bench's wb-int8 and wb-int8-sp90 engines, sequence
128, 2 threads) with and without streaming stores in the AMX epilogue, in one process, taking
turns: 12 rounds, each cell the median of 30 (batch 1) or 5 (batch 8) forwards. The logits must
be the same bits. Needs the build of gemm_streaming.py.

    python results/bench/spr-amx/output-writes/forward_streaming.py
"""
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np  # noqa: E402

sys.path.insert(0, "results/bench/emr-amx")
from forward_breakdown import _engine  # noqa: E402

from workbench_ext import int8  # noqa: E402

for sp in (0.0, 0.9):
    eng = _engine(sp, (1, 4))
    eng.num_threads = 2
    for B in (1, 8):
        ids = np.random.default_rng(0).integers(1000, 20000, size=(B, 128))
        mask = np.ones((B, 128), np.int64)

        def timed(on, n=30 if B == 1 else 5):
            int8._set_amx_nt(on)
            eng(ids, mask)
            ts = []
            for _ in range(n):
                t0 = time.perf_counter()
                eng(ids, mask)
                ts.append(time.perf_counter() - t0)
            return np.median(ts) * 1e3

        int8._set_amx_nt(0)
        o0 = eng(ids, mask)
        int8._set_amx_nt(1)
        assert np.array_equal(o0, eng(ids, mask))
        a, b = [], []
        for r in range(12):
            if r % 2:
                a.append(timed(0)); b.append(timed(1))
            else:
                b.append(timed(1)); a.append(timed(0))
        rat = np.array(a) / np.array(b)
        print(f"sp {sp} batch {B}: stores {np.median(a):.2f} ms, streaming {np.median(b):.2f} ms, "
              f"ratio {np.median(rat):.3f} ({rat.min():.3f}-{rat.max():.3f})", flush=True)
int8._set_amx_nt(0)
