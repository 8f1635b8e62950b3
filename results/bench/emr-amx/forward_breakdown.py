"""Where the time of one DistilBERT-base forward goes (batch 1, seq 128) on this CPU.

Times, in one process, medians of `--reps` calls with `--threads` kernel threads:
  1. the compiled forward (one call per forward: workbench_ext.encoder) of a dense int8 engine
     and of one pruned to 90 % in 16x64 tiles (`--block 16x64`, the default) or in 1x4 blocks
     (`--block 1x4`, the bench's wb-int8-sp90);
  2. the same engines op by op (Engine._layer), each Linear and the attention wrapped in a
     timer, so the share of GEMMs, attention and the rest is measured, not guessed;
  3. each GEMM shape alone per kernel (AMX plain / pipelined, VNNI, tile-sparse), output
     preallocated, so kernel speed is separated from quantization and allocation.
Usage: python results/bench/emr-amx/forward_breakdown.py [--threads 2] [--reps 30] [--block 16x64|1x4]
"""
from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict

import numpy as np
import torch


def _engine(sparsity: float, block: tuple[int, int] = (16, 64)):
    from workbench.bench.models import distilbert
    from workbench.recipes.prune.magnitude import magnitude_prune_
    from workbench.runtime import compile_model

    model = distilbert()
    if sparsity:
        magnitude_prune_(model, sparsity, block=block)
    return compile_model(model, quantize=True, kernel_choice="measure")


def _op_by_op(engine, ids, mask, reps: int) -> dict[str, float]:
    """ms per forward by kind: each Linear (by its role) and the attention, the rest = total - them."""
    acc: dict[str, float] = defaultdict(float)
    lin = engine._linears

    def wrap(name, fn):
        role = name.split(".")[-1] if name.startswith("layers.") else "head"
        def timed(*a, **k):
            t = time.perf_counter()
            r = fn(*a, **k)
            acc[role] += time.perf_counter() - t
            return r
        return timed

    saved_lin, saved_att, saved_enc = dict(lin), engine._attention, engine._encoder
    for n, f in saved_lin.items():
        lin[n] = wrap(n, f)

    def att(*a, **k):
        t = time.perf_counter()
        r = saved_att(*a, **k)
        acc["attention"] += time.perf_counter() - t
        return r
    engine._attention, engine._encoder = att, None
    try:
        for _ in range(3):
            engine(ids, mask)
        acc.clear()
        t = time.perf_counter()
        for _ in range(reps):
            engine(ids, mask)
        total = (time.perf_counter() - t) / reps
    finally:
        lin.update(saved_lin)
        engine._attention, engine._encoder = saved_att, saved_enc
    out = {k: v / reps * 1e3 for k, v in sorted(acc.items())}
    out["rest"] = total * 1e3 - sum(out.values())
    out["total"] = total * 1e3
    return out


def _gemm_rows(threads: int, reps: int) -> list[str]:
    from workbench.bench.gemm import _block_sparse, _time
    from workbench_ext import cpu, int8

    rng = np.random.default_rng(0)
    rows = []
    for k, n in ((768, 2304), (768, 768), (768, 3072), (3072, 768)):
        x = rng.standard_normal((128, k)).astype(np.float32)
        w = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
        ws = np.full(n, 0.01, np.float32)
        out = np.empty((128, n), np.float32)
        cells = []
        for label, isa, ww, cls in (("amx", "amx", w, int8.DenseInt8Linear),
                                    ("vnni", "avx512_vnni", w, int8.DenseInt8Linear),
                                    ("avx2", "avx2", w, int8.DenseInt8Linear),
                                    ("tile90", "amx", _block_sparse(w, 0.9, rng, (16, 64)), int8.TileSparseInt8Linear)):
            if isa not in cpu.available_isas():
                continue
            layer = cls(ww, ws, None, isa=isa)
            s = _time(lambda: layer(x, num_threads=threads, out=out), reps, 3)[0]
            cells.append(f"{label} {s * 1e3:.3f} ms {2 * 128 * k * n / s / 1e12:.2f} TOP/s")
            if label == "amx":
                int8._set_amx_pipelined(0)
                s = _time(lambda: layer(x, num_threads=threads, out=out), reps, 3)[0]
                int8._set_amx_pipelined(1)
                cells.append(f"amx-plain {s * 1e3:.3f} ms")
        rows.append(f"128x{k}x{n}: " + "; ".join(cells))
    return rows


def main() -> None:
    from workbench.bench.gemm import _time

    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--block", default="16x64", choices=("16x64", "1x4"), help="the 90 %% model's pruning block")
    a = p.parse_args()
    block = tuple(int(v) for v in a.block.split("x"))
    # the kernels' default thread count is read from OMP_NUM_THREADS when workbench_ext loads
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    torch.set_num_threads(a.threads)
    from workbench_ext import cpu
    print(f"isa {cpu.active_isa()}, threads {a.threads}")
    ids = np.random.default_rng(0).integers(1000, 20000, size=(1, 128))
    mask = np.ones((1, 128), np.int64)
    for sp in (0.0, 0.9):
        eng = _engine(sp, block)
        eng.num_threads = a.threads
        s = _time(lambda: eng(ids, mask), a.reps, 3)[0]
        parts = _op_by_op(eng, ids, mask, a.reps)
        print(f"{'dense' if not sp else ('tile90' if block == (16, 64) else 'sp90 (1x4)')}: compiled forward {s * 1e3:.2f} ms; op by op: "
              + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    for r in _gemm_rows(a.threads, a.reps):
        print(r)


if __name__ == "__main__":
    main()
