"""GEMM microbenchmark for the workbench_ext int8 kernels vs PyTorch on the same shape.

    python -m workbench.bench.gemm [--m 128 --k 768 --n 3072 --threads 1 --repeats 20] [--isa avx2]

Every kernel at every thread count is a *cell*; after each cell's warm-up, the cells take turns:
round r times each cell once (in an order rotated every round, each timed call right after an
untimed one: `workbench.bench.gemm_turns`), `repeats` rounds in all. So a
slowdown of the shared machine, or a change of its clock, lands on every cell of a round alike,
and two thread counts are compared over the same minutes (timed one after the other, the 1- and
2-thread rows of one run once disagreed by 1.2x against 1.9x). Reported per cell: the median and
the minimum time, and ``vs_dense``: the median over rounds of (the dense layer's time at the same
thread count in that round) / (this cell's time), a same-round speed-up.

The cells:

* ``wb-int8-dense``      DenseInt8Linear (per-token u8 quantization + GEMM + dequant, all fused)
* ``wb-int8-dense-amx-plain``  on AMX CPUs only: the same layer on the plain AMX worker (epilogue
                         after the tile multiplies, not between them), the A/B of the default one
* ``wb-int8-dense-a7``   on AVX2 only: the same layer with ``act_bits=7`` (7-bit activations, the
                         vpmaddubsw kernel)
* ``wb-int8-dense-pb``   on AVX2 only: 8-bit activations against pair-bounded weights (the random
                         weights requantized so |w[2j]| + |w[2j+1]| <= 128: the vpmaddubsw kernel)
* ``wb-int8-sparse70/80/90``  BlockSparseInt8Linear with 70/80/90 % of the 1x4 blocks zero
* ``wb-int8-tile70/80/90``  on AMX and AVX-512 VNNI CPUs: TileSparseInt8Linear with 70/80/90 % of
                         the 16x64 blocks zero (whole weight tiles, skipped), against the dense row;
                         on AMX also ``-vnni``: the same layer pinned to the AVX-512 VNNI tile kernel
* ``torch-fp32``         ``x @ w.T`` (float32 matmul, MKL/oneDNN)
* ``torch-int8``         ``torch._int_mm`` (int8 x int8 -> int32 only, no quantization), if it runs on CPU

GOP/s = 2*M*N*K / time.  For sparse layers this is the *effective dense-equivalent* rate
(the same dense op count divided by the sparse time), so it can exceed the hardware peak.

Peak: ``ops/cycle/core x clock x threads``, estimated by `workbench.bench.peak` (the issue
rate of each path's multiply instruction measured on this core, and the clock).
Writes ``<out_dir>/gemm.csv`` atomically (``workbench.results.write_csv``).
"""
from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from workbench.bench.gemm_turns import _Cell, _time, _time_in_turns, _vs_dense  # noqa: F401  (_time: scripts)
from workbench.bench.host import cpu_name
from workbench.bench.peak import (FP32_FLOPS_PER_CYCLE, INT8_OPS_PER_CYCLE, MAX_PLAUSIBLE_GHZ,  # noqa: F401
                                  cpu_clock_ghz, nominal_clock_ghz, per_cycle_peak)
from workbench.results import write_csv

FIELDS = ["kernel", "isa", "m", "k", "n", "threads", "sparsity", "nnz_blocks", "median_ms",
          "min_ms", "gops", "gops_best", "vs_dense", "peak_gops", "pct_of_peak", "clock_ghz", "peak_note"]


def _block_sparse(w: np.ndarray, sparsity: float, rng: np.random.Generator,
                  block: tuple[int, int] = (1, 4)) -> np.ndarray:
    """`w` with a random `sparsity` of its `block`s zeroed: 1x4 (the block-sparse layout) or
    16x64 (one AMX weight tile); ragged edges are partial blocks."""
    N, K = w.shape
    r, c = block
    keep = rng.random((-(-N // r), -(-K // c))) >= sparsity
    mask = np.repeat(np.repeat(keep, r, axis=0), c, axis=1)[:N, :K]
    return np.where(mask, w, 0).astype(w.dtype)


def _cells(m: int, k: int, n: int, threads: int,
           sparsities: Sequence[float], isa: str | None, seed: int,
           torch_baselines: bool, clock: tuple[float, str]) -> list[_Cell]:
    """The cells of one thread count (the layers built, nothing timed yet)."""
    from workbench.runtime.linear import quantize_weight_per_channel
    from workbench_ext import cpu, int8

    isa_used = isa.strip().lower() if isa else cpu.active_isa()
    cpu.isa_code(isa_used)   # unknown / unavailable -> ValueError naming it
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
    ws = (rng.random(n).astype(np.float32) + 0.5) * np.float32(0.01)
    b = rng.standard_normal(n).astype(np.float32)
    ghz, clock_src = clock
    best = cpu.available_isas()[0]
    int8_cycle, int8_how = per_cycle_peak(isa_used)
    fp32_cycle, fp32_how = per_cycle_peak(best, "fp32")
    int8_peak, fp32_peak = int8_cycle * ghz * threads, fp32_cycle * ghz * threads
    cells: list[_Cell] = []

    def add(kernel, isa_name, call, peak, note, sparsity=0.0, nnz="", max_runs=None, prepare=None):
        cells.append(_Cell(kernel, isa_name, threads, call, peak, note, sparsity, nnz, max_runs, prepare))

    note = (f"{int8_cycle:g} int8 ops/cycle ({isa_used}: {int8_how}) x {ghz:.2f} GHz [{clock_src}] x "
            f"{threads} thr")
    dense = int8.DenseInt8Linear(w, ws, b, isa=isa_used)
    add("wb-int8-dense", dense.isa, lambda: dense(x, num_threads=threads), int8_peak, note)
    if dense.isa == "amx":   # the A/B of the two AMX workers (same results), see wb_int8_dense_amx.h
        def plain_amx() -> None:
            int8._set_amx_pipelined(0)
            try:
                dense(x, num_threads=threads)
            finally:
                int8._set_amx_pipelined(1)
        add("wb-int8-dense-amx-plain", dense.isa, plain_amx, int8_peak, note + "; plain AMX worker (A/B)")
    if dense.isa == "avx2":   # 7-bit activations: the vpmaddubsw kernel (wb_int8_dense_avx2_u7.h)
        dense7 = int8.DenseInt8Linear(w, ws, b, isa=isa_used, act_bits=7)
        add("wb-int8-dense-a7", dense7.isa, lambda: dense7(x, num_threads=threads), int8_peak,
            note + "; act_bits=7 (u7 x s8 vpmaddubsw kernel)")
        wpb, wspb = quantize_weight_per_channel(w * ws[:, None], pair_bounded=True)
        dense_pb = int8.DenseInt8Linear(wpb, wspb, b, isa=isa_used)
        add("wb-int8-dense-pb", dense_pb.isa, lambda: dense_pb(x, num_threads=threads), int8_peak,
            note + "; pair-bounded weights, 8-bit activations (u8 x s8 vpmaddubsw kernel)")
    # the 1x4 block-sparse layer has no AMX kernel (tiles cannot skip 1x4 blocks): under amx it
    # runs the AVX-512 VNNI one
    sp_isa = "avx512_vnni" if isa_used == "amx" else isa_used
    sp_cycle, sp_how = per_cycle_peak(sp_isa)
    sp_peak = sp_cycle * ghz * threads
    sp_note = (f"{sp_cycle:g} int8 ops/cycle ({sp_isa}: {sp_how}) x {ghz:.2f} GHz [{clock_src}] x "
               f"{threads} thr; effective dense-equivalent GOP/s")
    for sp in sparsities:
        if not 0.0 <= sp < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sp}")
        layer = int8.BlockSparseInt8Linear(_block_sparse(w, sp, rng), ws, b, isa=isa_used)
        kernel_isa = layer.isa if sp_isa == layer.isa else f"{layer.isa}({sp_isa} kernel)"
        add(f"wb-int8-sparse{round(sp * 100)}", kernel_isa, functools.partial(layer, x, num_threads=threads),
            sp_peak, sp_note, sparsity=sp, nnz=layer.nnz_blocks)

    if dense.isa in ("amx", "avx512_vnni"):   # item 3 of the runtime issue: tile-skipping sparse vs dense
        for sp in sparsities:
            w_tiles = _block_sparse(w, sp, rng, (16, 64))
            layer = int8.TileSparseInt8Linear(w_tiles, ws, b, isa=isa_used)
            add(f"wb-int8-tile{round(sp * 100)}", layer.isa, functools.partial(layer, x, num_threads=threads),
                int8_peak, note + "; 16x64 blocks zero, skipped; effective dense-equivalent GOP/s",
                sparsity=sp, nnz=layer.nnz_tiles)
            if dense.isa == "amx":   # the same tiles on the VNNI tile kernel: which one AMX CPUs should run
                vnni = int8.TileSparseInt8Linear(w_tiles, ws, b, isa="avx512_vnni")
                add(f"wb-int8-tile{round(sp * 100)}-vnni", vnni.isa, functools.partial(vnni, x, num_threads=threads),
                    sp_peak, sp_note + "; 16x64 blocks zero, skipped", sparsity=sp, nnz=vnni.nnz_tiles)

    if torch_baselines:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            xt = torch.from_numpy(x)
            wt = torch.from_numpy(w.astype(np.float32) * ws[:, None])
            a8 = torch.from_numpy(rng.integers(-128, 128, size=(m, k)).astype(np.int8))
            b8 = torch.from_numpy(np.ascontiguousarray(w.T))

            def torch_fp32() -> None:
                with torch.inference_mode():
                    torch.matmul(xt, wt.T)

            def torch_int8() -> None:
                with torch.inference_mode():
                    torch._int_mm(a8, b8)

            def own_threads() -> None:
                """Untimed, before each call: torch's thread count for this cell (the cells take
                turns with other thread counts)."""
                if torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)

            add("torch-fp32", "torch", torch_fp32, fp32_peak,
                f"fp32 peak {fp32_cycle:g} flops/cycle ({best}: {fp32_how}) x {ghz:.2f} GHz x {threads} thr",
                prepare=own_threads)
            try:
                torch.set_num_threads(threads)
                t0 = time.perf_counter()
                torch_int8()
                first = time.perf_counter() - t0
            except Exception as exc:  # not supported on this build / CPU: skip
                print(f"torch-int8: skipped (torch._int_mm failed on CPU: {type(exc).__name__}: {exc})",
                      file=sys.stderr)
            else:
                slow = first > 0.05   # the CPU _int_mm is a slow reference kernel on many builds: cap its runs
                add("torch-int8", "torch", torch_int8, per_cycle_peak(best)[0] * ghz * threads,
                    f"torch._int_mm s8xs8->s32 only (no quantization); peak of {best}",
                    max_runs=3 if slow else None, prepare=own_threads)
    return cells


def run_gemm_bench(m: int = 128, k: int = 768, n: int = 3072, threads: int | Sequence[int] = 1,
                   repeats: int = 20, warmup: int = 3, sparsities: Sequence[float] = (0.7, 0.8, 0.9),
                   isa: str | None = None, out_dir: str | os.PathLike | None = "results/bench",
                   quick: bool = False, seed: int = 0, torch_baselines: bool = True,
                   verbose: bool = True) -> list[dict]:
    """Run the microbenchmark; return the rows (dicts with FIELDS) and write
    ``<out_dir>/gemm.csv`` (skipped when out_dir is None).  ``threads`` may be a list.
    ``quick``: 3 repeats, 1 warm-up."""
    if min(m, k, n) < 1:
        raise ValueError(f"m, k, n must be >= 1, got {m}, {k}, {n}")
    thread_list = [threads] if isinstance(threads, int) else list(threads)
    if not thread_list or any(int(t) < 1 for t in thread_list):
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    if quick:
        repeats, warmup = min(repeats, 3), min(warmup, 1)
    clock = cpu_clock_ghz()   # once per run, so every row uses the same peak per thread
    torch_threads = _torch_threads() if torch_baselines else None   # the torch cells change it
    try:
        cells: list[_Cell] = []
        for t in thread_list:
            cells += _cells(m, k, n, int(t), sparsities, isa, seed, torch_baselines, clock)
        _time_in_turns(cells, repeats, warmup)
    finally:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
    dense = {c.threads: c for c in cells if c.kernel == "wb-int8-dense"}
    rows = [_row(c, m, k, n, clock[0], _vs_dense(c, dense.get(c.threads))) for c in cells]
    if out_dir is not None:
        write_csv(Path(out_dir) / "gemm.csv", rows, FIELDS, float_format=None)  # atomic; values as measured
    if verbose:
        print(format_rows(rows))
        if out_dir is not None:
            print(f"wrote {Path(out_dir) / 'gemm.csv'}")
    return rows


def _torch_threads() -> int | None:
    """torch's thread count now (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


def _row(c: _Cell, m: int, k: int, n: int, ghz: float, vs_dense: float | str) -> dict:
    ops = 2.0 * m * n * k
    med, mn = statistics.median(c.times), min(c.times)
    return {
        "kernel": c.kernel, "isa": c.isa, "m": m, "k": k, "n": n, "threads": c.threads,
        "sparsity": c.sparsity, "nnz_blocks": c.nnz, "median_ms": round(med * 1e3, 4),
        "min_ms": round(mn * 1e3, 4), "gops": round(ops / med / 1e9, 2),
        "gops_best": round(ops / mn / 1e9, 2), "vs_dense": vs_dense,
        "peak_gops": round(c.peak, 1) if c.peak else "", "clock_ghz": round(ghz, 3),
        "pct_of_peak": round(100.0 * ops / med / 1e9 / c.peak, 1) if c.peak else "",
        "peak_note": c.note,
    }


def format_rows(rows: list[dict]) -> str:
    head = (f"{'kernel':<20} {'isa':<12} {'MxKxN':<16} {'thr':>3} {'median ms':>10} {'GOP/s':>9} "
            f"{'best':>8} {'vs dense':>8} {'peak':>8} {'%peak':>6}")
    lines = [f"GEMM microbenchmark on {cpu_name()}, {os.cpu_count()} logical CPUs", head, "-" * len(head)]
    for r in rows:
        shape = f"{r['m']}x{r['k']}x{r['n']}"
        lines.append(f"{r['kernel']:<20} {r['isa']:<12} {shape:<16} {r['threads']:>3} {r['median_ms']:>10.3f} "
                     f"{r['gops']:>9.1f} {r['gops_best']:>8.1f} {r.get('vs_dense', '')!s:>8} {r['peak_gops']!s:>8} "
                     f"{r['pct_of_peak']!s:>6}")
    if rows:
        lines.append(f"GOP/s from the median time, best = from the fastest run; vs dense = median over the "
                     f"rounds of the dense layer's time / this one's, same thread count, same round (the "
                     f"cells take turns); peak: {rows[0]['peak_note']}; sparse GOP/s are dense-equivalent "
                     "(2MNK / time)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m workbench.bench.gemm", description=__doc__.split("\n")[0])
    p.add_argument("--m", type=int, default=128)
    p.add_argument("--k", type=int, default=768)
    p.add_argument("--n", type=int, default=3072)
    p.add_argument("--threads", type=str, default="1", help="e.g. 1 or 1,2")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sparsities", type=str, default="0.7,0.8,0.9")
    p.add_argument("--isa", type=str, default=None, help="force a path (default: cpu.active_isa())")
    p.add_argument("--out", type=str, default="results/bench", help="folder for gemm.csv")
    p.add_argument("--no-torch", action="store_true", help="skip the torch baselines")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    try:
        threads = [int(t) for t in a.threads.split(",") if t.strip()]
        sparsities = [float(s) for s in a.sparsities.split(",") if s.strip()]
        run_gemm_bench(a.m, a.k, a.n, threads, a.repeats, a.warmup, sparsities, a.isa, a.out,
                       a.quick, torch_baselines=not a.no_torch)
    except ValueError as exc:
        print(f"gemm: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
