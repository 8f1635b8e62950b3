"""Where the dense AMX layer's output buffer starts: NumPy's np.empty (16-64 bytes past a cache
line, so each 64-byte row store of the epilogue straddles two lines; what the A/B harnesses'
`gemm_layers` passes as out=), a page-aligned buffer (what the compiled encoder's buffers are),
or none (the layer allocates a page-aligned one each call, as `workbench bench`'s GEMM rows do).
DistilBERT's four GEMM shapes, 2 threads, 15 rounds taking turns; TOP/s of the median call.

Run from the repository root on an AMX CPU: .venv/bin/python results/bench/spr-amx/gemm-cost/align_ab.py
"""
import os, statistics, sys
os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "emr-amx"))
import numpy as np
from amx_ab import gemm_layers, rotated
from workbench.bench.gemm import _time
from workbench_ext import int8
rng = np.random.default_rng(0)
for k, n, x, layer, out16 in gemm_layers(int8, "amx", rng):
    outA = int8._aligned_bytes(128 * n * 4).view(np.float32).reshape(128, n)
    print("offsets", out16.ctypes.data % 4096, outA.ctypes.data % 4096, x.ctypes.data % 64)
    cells = {"np.empty out": lambda: layer(x, num_threads=2, out=out16),
             "page-aligned out": lambda: layer(x, num_threads=2, out=outA),
             "no out (new each call)": lambda: layer(x, num_threads=2)}
    times = {c: [] for c in cells}
    for r in range(15):
        for c in rotated(list(cells), r):
            times[c].append(_time(cells[c], 5, 1)[0])
    m = {c: statistics.median(t) for c, t in times.items()}
    base = m["np.empty out"]
    print(f"128x{k}x{n} t=2: " + "; ".join(f"{c} {2*128*k*n/m[c]/1e12:.2f} TOP/s ({base/m[c]:.2f}x)" for c in cells), flush=True)
