"""Where the run-to-run spread of our sparse engines comes from on a 2-vCPU cloud VM.

Every ~1 s window: the round trip of a cache line between the two vCPUs (pingpong.c), then the
batch-1 forward of DistilBERT-base int8 on 2 threads, dense and 90 %-sparse (1x4 blocks), timed
for 0.8 s each (medians), with the share of the kernels' chunks the pool's worker ran.
Usage: python results/bench/zen4-spread/phases.py [--seconds 150] > phases.txt
"""
from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def pingpong_lib():
    out = Path(tempfile.mkdtemp()) / "libpingpong.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(out), str(Path(__file__).with_name("pingpong.c")),
                    "-lpthread"], check=True)
    lib = ctypes.CDLL(str(out))
    lib.pingpong.restype, lib.pingpong.argtypes = ctypes.c_double, [ctypes.c_long]
    return lib


NEAR_NS = 150
"""A cache-line round trip under this many ns: the two vCPUs share a die (58 ns here; 331 across)."""


def round_trip_ns(lib) -> float:
    """The cache-line round trip between the two vCPUs now (pingpong.c, best of 3)."""
    return min(lib.pingpong(20000) for _ in range(3))


def placement(before_ns: float, after_ns: float) -> str | None:
    """The placement of a window from its round trips at both ends: near or far when they agree,
    None when the vCPUs moved during it."""
    if (before_ns < NEAR_NS) != (after_ns < NEAR_NS):
        return None
    return "near" if before_ns < NEAR_NS else "far"


def batch1_engines(sparsity: dict[str, float]) -> tuple[dict, np.ndarray, np.ndarray]:
    """The engines these scripts time: DistilBERT-base int8 on 2 threads, one per name, pruned in
    1x4 blocks at its sparsity (0: dense), kernels chosen by measuring; and a batch-1 input of
    128 tokens (ids, mask)."""
    os.environ["OMP_NUM_THREADS"] = "2"
    import torch

    torch.set_num_threads(2)
    from workbench.bench.models import distilbert
    from workbench.recipes.prune.magnitude import magnitude_prune_
    from workbench.runtime import compile_model

    engines = {}
    for name, sp in sparsity.items():
        model = distilbert()
        if sp:
            magnitude_prune_(model, sp, block=(1, 4))
        engines[name] = compile_model(model, quantize=True, kernel_choice="measure")
        engines[name].num_threads = 2
    ids = np.random.default_rng(0).integers(1000, 20000, size=(1, 128))
    return engines, ids, np.ones((1, 128), np.int64)


def one_warm_engine(sparsity: float, warmup: int = 10) -> tuple:
    """(engine, ids, mask, pingpong library): one engine of batch1_engines at `sparsity`, after
    `warmup` forwards."""
    engines, ids, mask = batch1_engines({"engine": sparsity})
    engine = engines["engine"]
    for _ in range(warmup):
        engine(ids, mask)
    return engine, ids, mask, pingpong_lib()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=150)
    a = p.parse_args()
    engines, ids, mask = batch1_engines({"dense": 0.0, "sp90": 0.9})
    from workbench_ext import pool

    lib = pingpong_lib()

    def window(eng) -> tuple[float, float]:
        s0, ts, t1 = pool.stats(), [], time.time()
        while time.time() - t1 < 0.8:
            t = time.perf_counter()
            eng(ids, mask)
            ts.append(time.perf_counter() - t)
        s1 = pool.stats()
        w = s1["chunks_by_workers"] - s0["chunks_by_workers"]
        c = s1["chunks_by_caller"] - s0["chunks_by_caller"]
        return float(np.median(ts)) * 1e3, w / max(1, w + c)

    print("pingpong_ns dense_ms dense_worker_share sp90_ms sp90_worker_share", flush=True)
    end = time.time() + a.seconds
    while time.time() < end:
        before = round_trip_ns(lib)
        d, dw = window(engines["dense"])
        s, sw = window(engines["sp90"])
        after = round_trip_ns(lib)
        print(f"{max(before, after):.0f} {d:.2f} {dw:.2f} {s:.2f} {sw:.2f}", flush=True)


if __name__ == "__main__":
    main()
