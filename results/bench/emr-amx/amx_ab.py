"""A/B of the AMX dense int8 kernel's variants, in one process, alternating (median of rounds).

For each DistilBERT GEMM shape (M = 128) and 1 and 2 threads, all taking turns in every round:
the pipelined worker in panel-pair-major and grouped item order (`int8._set_amx_order`) and with
its operands fetched differently (`int8._set_amx_tuning`: A copied into tile order, A and B
prefetch distances, the next panel pair's weights into L2 in a burst, spread, or into L1); then the dense
engine's whole compiled forward (batch 1, seq 128, 2 threads) in each variant.  The plain worker
and 512 KB groups ran in 2026-12-04's amx_ab.txt and are left out.  First, the timing
probe (`workbench_ext.int8._set_amx_probe`, outputs wrong while on): the pipelined worker whole,
without its epilogue, without its tile loads and without its TDPBUSDs, as cycles per 32x32 item
per thread at the measured clock, so that the next change to the kernel goes where the time is.
Then the 1x4 block-sparse kernel (AVX-512 VNNI, which the "amx" path also runs) at 90 % with
activation tiles of 1 to 4 groups of 16 rows (`workbench_ext.int8._set_sparse_vnni_groups`; the
default, chosen on a Zen 4, is 4, or 2 where K > 1536), taking turns likewise: which G suits
Intel's cores is untimed.
Usage (on an AMX CPU): python results/bench/emr-amx/amx_ab.py [--rounds 15] [--probe-only]
"""
from __future__ import annotations

import argparse
import os
import statistics

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--probe-only", action="store_true", help="only the timing probe")
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from workbench.bench.gemm import _time
    from workbench_ext import cpu, int8

    def _t(fn, reps: int = 5) -> float:   # one round's sample: the median of `reps` calls
        return _time(fn, reps, 1)[0]

    isa = os.environ.get("AB_ISA", "amx")   # another ISA only to dry-run this script
    if isa not in cpu.available_isas():
        raise SystemExit(f"needs {isa}; this CPU has {cpu.available_isas()}")
    rng = np.random.default_rng(0)
    # name: (pipelined worker, item order, group bytes, (a_packed, a_ahead, b_ahead, b_next));
    # the first is the default.  The plain worker and 512 KB groups ran in 2026-12-04's amx_ab.txt.
    d = (0, 2, 0, 1)
    variants = {
        "default": (1, 0, 1 << 20, d),
        "g1024k": (1, 1, 1 << 20, d),
        "no-prefetch": (1, 0, 1 << 20, (0, 0, 0, 0)),
        "a-ahead4": (1, 0, 1 << 20, (0, 4, 0, 1)),
        "b-ahead2": (1, 0, 1 << 20, (0, 2, 2, 1)),
        "b-spread-l2": (1, 0, 1 << 20, (0, 2, 0, 2)),
        "b-spread-l1": (1, 0, 1 << 20, (0, 2, 0, 3)),
        "a-packed": (1, 0, 1 << 20, (1, 2, 0, 1)),
        "a-packed-b-ahead2": (1, 0, 1 << 20, (1, 2, 2, 1)),
        "a-packed-b-ahead2-spread": (1, 0, 1 << 20, (1, 2, 2, 2)),
        "a-packed-g1024k": (1, 1, 1 << 20, (1, 2, 0, 1)),
    }

    def setv(v):
        pipe, order, gb, tuning = v
        int8._set_amx_pipelined(pipe)
        int8._set_amx_order(order, gb)
        int8._set_amx_tuning(*tuning)

    probe(int8, isa, rng, a.rounds, _t, cpu.measure_clock_ghz())
    if a.probe_only:
        return
    sparse_groups(int8, isa, rng, a.rounds, _t)
    for k, n, x, layer, out in gemm_layers(int8, isa, rng):
        # thread counts and variants all take turns within each round, so a change in the shared
        # machine's speed hits every cell of a round alike
        times = {(nt, name): [] for nt in (1, 2) for name in variants}
        setv(variants["default"])
        ref = layer(x, num_threads=2).copy()
        for name, v in variants.items():   # every variant gives the default's bits, here on AMX
            setv(v)
            for nt in (1, 2):   # said, not asserted: a mismatch must not cost the timings
                if not np.array_equal(layer(x, num_threads=nt), ref):
                    print(f"MISMATCH 128x{k}x{n} {name} t={nt}: not the default's bits", flush=True)
        for r in range(a.rounds):
            for (nt, name) in rotated(list(times), r):
                setv(variants[name])
                times[nt, name].append(_t(lambda: layer(x, num_threads=nt, out=out)))
        setv(variants["default"])
        for nt in (1, 2):
            base = statistics.median(times[nt, "default"])
            cells = [f"{name} {2 * 128 * k * n / statistics.median(times[nt, name]) / 1e12:.2f} TOP/s "
                     f"({base / statistics.median(times[nt, name]):.2f}x)" for name in variants]
            print(f"128x{k}x{n} t={nt}: " + "; ".join(cells), flush=True)

    from workbench.bench.models import distilbert
    from workbench.runtime import compile_model
    eng = compile_model(distilbert(), quantize=True)
    eng.num_threads = 2
    ids = rng.integers(1000, 20000, size=(1, 128))
    mask = np.ones((1, 128), np.int64)
    ref = eng(ids, mask)
    times = {name: [] for name in variants}
    for r in range(a.rounds):
        for name, v in rotated(list(variants.items()), r):
            setv(v)
            times[name].append(_t(lambda: eng(ids, mask), 3))
            if not np.array_equal(eng(ids, mask), ref):
                print(f"MISMATCH forward {name}: not the default's logits", flush=True)
    setv(variants["default"])
    base = statistics.median(times["default"])
    print("dense forward b1 t=2: " + "; ".join(
        f"{k} {statistics.median(v) * 1e3:.2f} ms ({base / statistics.median(v):.3f}x)" for k, v in times.items()),
        flush=True)


def rotated(cells: list, r: int) -> list:
    """The cells of round r, starting at cell r: on Zen 5 with identical variants, whichever cell
    came first in every round read ~3 % slower, so no variant may always be first."""
    k = r % len(cells)
    return cells[k:] + cells[:k]


def gemm_layers(int8, isa: str, rng):
    """DistilBERT's GEMM shapes (M = 128) as (K, N, x, random int8 layer, output buffer)."""
    for k, n in ((768, 3072), (3072, 768), (768, 2304), (768, 768)):
        x = rng.standard_normal((128, k)).astype(np.float32)
        w = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
        yield k, n, x, int8.DenseInt8Linear(w, np.full(n, 0.01, np.float32), None, isa=isa), np.empty((128, n), np.float32)


def sparse_groups(int8, isa: str, rng, rounds: int, timer) -> None:
    """The 1x4 sparse layer at 90 % per GEMM shape, thread count and row groups per tile (all
    taking turns in every round): dense-equivalent TOP/s and the speed over the default G = 4."""
    from workbench.bench.gemm import _block_sparse

    print("1x4 sparse 90 % (VNNI kernel), rows per tile 16 x G; dense-equivalent TOP/s, "
          "speed over G=4 in brackets", flush=True)
    try:
        for k, n, x, _, out in gemm_layers(int8, isa, rng):
            w = _block_sparse(rng.integers(-127, 128, size=(n, k)).astype(np.int8), 0.9, rng)
            layer = int8.BlockSparseInt8Linear(w, np.full(n, 0.01, np.float32), None, isa=isa)
            times = {(nt, g): [] for nt in (1, 2) for g in (1, 2, 3, 4)}
            for r in range(rounds):
                for nt, g in rotated(list(times), r):
                    int8._set_sparse_vnni_groups(g)
                    times[nt, g].append(timer(lambda: layer(x, num_threads=nt, out=out)))
            for nt in (1, 2):
                base = statistics.median(times[nt, 4])
                print(f"128x{k}x{n} t={nt}: " + "; ".join(
                    f"G={g} {2 * 128 * k * n / statistics.median(times[nt, g]) / 1e12:.2f} "
                    f"({base / statistics.median(times[nt, g]):.2f}x)" for g in (1, 2, 3, 4)), flush=True)
    finally:
        int8._set_sparse_vnni_groups(0)   # the default: by K


PROBES = {"whole": 0, "no-epilogue": 1, "no-loads": 2, "no-tdpbusd": 3, "y-in-scratch": 4}


def probe(int8, isa: str, rng, rounds: int, timer, ghz: float) -> None:
    """The pipelined worker with parts left out (modes taking turns in every round), per GEMM
    shape and thread count: ms per call, and cycles per 32x32 work item on each thread."""
    print(f"timing probe (pipelined worker, panel-pair-major; clock {ghz:.2f} GHz measured); "
          "cycles per 32x32 item per thread, ms per call in brackets", flush=True)
    try:
        for k, n, x, layer, out in gemm_layers(int8, isa, rng):
            items = (128 // 32) * ((n + 31) // 32)
            times = {(nt, mode): [] for nt in (1, 2) for mode in PROBES}
            for r in range(rounds):
                for nt, mode in rotated(list(times), r):
                    int8._set_amx_probe(PROBES[mode])
                    times[nt, mode].append(timer(lambda: layer(x, num_threads=nt, out=out)))
            for nt in (1, 2):
                cells = []
                for mode in PROBES:
                    sec = statistics.median(times[nt, mode])
                    cells.append(f"{mode} {sec * ghz * 1e9 / (items / nt):.0f} ({sec * 1e3:.3f} ms)")
                print(f"128x{k}x{n} t={nt} ({items} items; its TDPBUSDs alone: {k} cycles an item): "
                      + "; ".join(cells), flush=True)
    finally:
        int8._set_amx_probe(0)


if __name__ == "__main__":
    main()
