"""The 1x4 block-sparse int8 layer at 128 x 768 x 3072, 90 % sparse, run for a few seconds, to see
under `perf record` where its time goes (kernel, epilogue, quantization and packing):

    perf record -o /tmp/layer.data python results/bench/zen5-sparse-bound/layer_loop.py [threads] [gelu]
    perf report -i /tmp/layer.data --stdio --no-children | head -20

The output is 64-byte aligned, as the compiled encoder's buffers are, so the epilogue takes its
direct-store path (an unaligned NumPy output goes through a row buffer instead).
"""
import sys
import time

import numpy as np

from workbench.bench.gemm import _block_sparse
from workbench_ext import int8


def aligned_empty(shape: tuple[int, int]) -> np.ndarray:
    n = shape[0] * shape[1] * 4
    buf = np.empty(n + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    return buf[off:off + n].view(np.float32).reshape(shape)


threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
activation = "gelu" if len(sys.argv) > 2 and sys.argv[2] == "gelu" else None
rng = np.random.default_rng(0)
k, n = 768, 3072
x = rng.standard_normal((128, k)).astype(np.float32)
w = _block_sparse(rng.integers(-127, 128, size=(n, k)).astype(np.int8), 0.9, rng)
layer = int8.BlockSparseInt8Linear(w, np.full(n, 0.01, np.float32), None, isa="avx512_vnni")
out = aligned_empty((128, n))
calls, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < 6:
    layer(x, num_threads=threads, out=out, activation=activation)
    calls += 1
print(f"{(time.perf_counter() - t0) / calls * 1e6:.1f} us a call ({calls} calls, {threads} thread(s), activation {activation})")
