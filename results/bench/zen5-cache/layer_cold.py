"""Each DistilBERT GEMM (M = 128) per kernel with its weights warm (the last call's) or cold
(a 128 MB buffer written between calls, then the input and output touched again so only the
weights are cold), or idle (a sleep as long as that, caches untouched), 2 threads, cells taking turns in every round: which kernel loses what when its
weights come from memory rather than L3.
Usage: python results/bench/zen5-cache/layer_cold.py [rounds]
"""
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np

from workbench.bench.gemm import _block_sparse
from workbench_ext import cpu, int8, sparse

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
isa = cpu.active_isa()
rng = np.random.default_rng(0)
flush = np.ones(128 << 20 >> 3, np.float64)
rows = []
for k, n in ((768, 2304), (768, 768), (768, 3072), (3072, 768)):
    x = rng.standard_normal((128, k)).astype(np.float32)
    out = np.empty((128, n), np.float32)
    w = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
    s = np.full(n, 0.01, np.float32)
    layers = {"dense": int8.DenseInt8Linear(w, s, None, isa=isa),
              "1x4 90%": int8.BlockSparseInt8Linear(_block_sparse(w, 0.9, rng), s, None, isa=isa)}
    if hasattr(int8, "TileSparseInt8Linear"):
        wt = w.copy()
        keep = rng.random((n // 16, k // 64)) >= 0.9
        wt *= np.kron(keep, np.ones((16, 64), np.int8)).astype(np.int8)
        layers["16x64 90%"] = int8.TileSparseInt8Linear(wt, s, None, isa=isa)
    for name, layer in layers.items():
        rows.append((f"128x{k}x{n} {name}", layer, x, out))


def call(layer, x, out, cold: str) -> float:
    if cold == "cold":
        np.add(flush, 1.0, out=flush)
    elif cold == "idle":   # as long as the flush, without touching memory: the pool's workers
        time.sleep(0.012)  # fall asleep either way (they spin 0.2 ms), so this is the wake-up alone
    if cold != "warm":
        x.sum()
        out.fill(0.0)
    t = time.perf_counter()
    layer(x, num_threads=2, out=out)
    return time.perf_counter() - t


MODES = ("warm", "idle", "cold")
times = {(r[0], c): [] for r in rows for c in MODES}
cells = [(r, c) for r in rows for c in MODES]
for i in range(rounds):
    k = i % len(cells)
    for (name, layer, x, out), cold in cells[k:] + cells[:k]:
        call(layer, x, out, cold)
        times[name, cold].append(np.median([call(layer, x, out, cold) for _ in range(7)]) * 1e6)
print(f"{isa}, 2 threads, {rounds} rounds of 7 calls; median us; idle: after a 12 ms sleep, "
      "cold: after writing 128 MB (~12 ms)", flush=True)
for name, *_ in rows:
    w, i, c = (np.median(times[name, m]) for m in MODES)
    print(f"{name:28s} warm {w:8.1f}  idle {i:8.1f} (+{i - w:5.1f})  cold {c:8.1f} (+{c - w:5.1f})", flush=True)
