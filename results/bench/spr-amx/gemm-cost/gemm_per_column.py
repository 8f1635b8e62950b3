"""The dense int8 layer (DenseInt8Linear: quantizing the input, the GEMM, the epilogue) at 128 x 768 x N on 2 threads,
called back to back into a preallocated output (`out=`): min, median and TOP/s of 200 calls per N, 3 rounds of the Ns.
N = 32 gives the fixed cost of a call; the rest grows with the output columns (README, fourth session).
Usage: python results/bench/spr-amx/gemm-cost/gemm_per_column.py > results/bench/spr-amx/gemm-cost/gemm_per_column.txt"""
import time, numpy as np
from workbench_ext import int8

rng = np.random.default_rng(0)
M, K = 128, 768
x = rng.standard_normal((M, K)).astype(np.float32)
layers = {}
for N in (32, 256, 768, 1536, 3072):
    w = rng.integers(-127, 128, size=(N, K)).astype(np.int8)
    layers[N] = (int8.DenseInt8Linear(w, np.full(N, 0.01, np.float32), np.zeros(N, np.float32)),
                 np.empty((M, N), np.float32))
print("isa", next(iter(layers.values()))[0].isa)
for layer, out in layers.values():
    for _ in range(50): layer(x, num_threads=2, out=out)
for rnd in range(3):
    for N, (layer, out) in layers.items():
        ts = []
        for _ in range(200):
            t = time.perf_counter(); layer(x, num_threads=2, out=out); ts.append(time.perf_counter() - t)
        ts = np.array(ts) * 1e6
        print(f"round {rnd} N={N}: min {ts.min():.0f} p50 {np.median(ts):.0f} us, "
              f"TOP/s {2 * M * K * N / np.median(ts) / 1e6:.2f} (p50) {2 * M * K * N / ts.min() / 1e6:.2f} (min)")
