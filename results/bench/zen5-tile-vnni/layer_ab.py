"""One int8 Linear at the encoder's shapes, three layouts of the same sparsity taking turns in one
process: dense, 1x4 block-sparse (`BlockSparseInt8Linear`) and 16x64 tile-sparse
(`TileSparseInt8Linear`), each layer's weights pruned at random in its own blocks (speed does not
depend on which blocks). Every round times each cell once (5 calls, after an untimed one), in an
order rotated every round; reported: the median over rounds, and the same-round ratios
1x4 / tile (how much faster the tile layout is) and dense / tile.

    python results/bench/zen5-tile-vnni/layer_ab.py [--rounds 15] [--threads 1,2] > layer_ab.txt
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from workbench.bench.gemm import _block_sparse
from workbench_ext import cpu, int8

SHAPES = {  # name: (rows, K, N)
    "distilbert qkv": (128, 768, 2304), "distilbert out": (128, 768, 768),
    "distilbert ffn1": (128, 768, 3072), "distilbert ffn2": (128, 3072, 768),
    "minilm ffn1 (26 rows)": (26, 384, 1536), "minilm ffn2 (26 rows)": (26, 1536, 384),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--sparsities", default="0.7,0.9")
    a = p.parse_args()
    print(f"isa={cpu.active_isa()}; median ms over {a.rounds} rounds (5 calls each); ratios same-round medians")
    print(f"{'shape':24} {'thr':>3} {'sp':>4} {'dense':>7} {'1x4':>7} {'tile':>7} {'1x4/tile':>8} {'dense/tile':>10}")
    rng = np.random.default_rng(0)
    for name, (m, k, n) in SHAPES.items():
        w = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
        ws, b = np.full(n, 0.01, np.float32), np.zeros(n, np.float32)
        x = rng.standard_normal((m, k)).astype(np.float32)
        for sp in (float(s) for s in a.sparsities.split(",")):
            cells = {"dense": int8.DenseInt8Linear(w, ws, b),
                     "1x4": int8.BlockSparseInt8Linear(_block_sparse(w, sp, rng), ws, b),
                     "tile": int8.TileSparseInt8Linear(_block_sparse(w, sp, rng, (16, 64)), ws, b)}
            for nt in (int(t) for t in a.threads.split(",")):
                ms: dict[str, list[float]] = {c: [] for c in cells}
                order = list(cells)
                for r in range(a.rounds):
                    for c in order[r % 3:] + order[:r % 3]:
                        cells[c](x, num_threads=nt)
                        t0 = time.perf_counter()
                        for _ in range(5):
                            cells[c](x, num_threads=nt)
                        ms[c].append((time.perf_counter() - t0) / 5 * 1e3)
                med = {c: statistics.median(v) for c, v in ms.items()}
                r14 = statistics.median(s / t for s, t in zip(ms["1x4"], ms["tile"]))
                rd = statistics.median(d / t for d, t in zip(ms["dense"], ms["tile"]))
                print(f"{name:24} {nt:>3} {sp:>4.0%} {med['dense']:7.4f} {med['1x4']:7.4f} {med['tile']:7.4f} "
                      f"{r14:8.2f}x {rd:9.2f}x", flush=True)


if __name__ == "__main__":
    main()
