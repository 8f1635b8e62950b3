"""Where the far vCPU placement costs time, op by op, on the compiled forward (batch 1, seq 128,
2 threads, DistilBERT-base int8, 1x4 block-sparse at --sparsity).

Every window (~0.3 s): the cache-line round trip between the two vCPUs (pingpong.c, before and
after), then 30 forwards under ``workbench_ext.pool.trace()``, which times every parallel job.
The compiled encoder runs the same jobs in the same order every forward (15 per layer; the last
layer, on the [CLS] rows only, is left out), so each job is named by its place. Prints, for the
windows with a near (< 150 ns) and a far round trip, the median per forward of each op summed
over layers 0-4, and the whole forward.
Usage: python results/bench/zen4-spread/jobs.py [--seconds 150] [--sparsity 0.9] > jobs.txt
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from phases import NEAR_NS, one_warm_engine, round_trip_ns  # noqa: E402

# the compiled encoder's parallel jobs within layer i, from job 15 i + 1 (job 0: the embeddings'
# LayerNorm; job 15 (i + 1): this layer's second LayerNorm)
LAYER_JOBS = ("quantize", "pack", "qkv", "attention", "quantize", "pack", "out", "layernorm",
              "quantize", "pack", "ffn1", "quantize", "pack", "ffn2", "layernorm")
FULL_LAYERS = 5


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=150)
    p.add_argument("--sparsity", type=float, default=0.9)
    a = p.parse_args()
    engine, ids, mask, lib = one_warm_engine(a.sparsity, warmup=5)
    from workbench_ext import pool

    with pool.trace() as t:
        engine(ids, mask)
    per_forward = len(t.jobs)
    roles = sorted(set(LAYER_JOBS))
    windows: dict[str, list[np.ndarray]] = {"near": [], "far": []}
    end = time.time() + a.seconds
    while time.time() < end:
        before = round_trip_ns(lib)
        forwards = []
        with pool.trace() as t:
            for _ in range(30):
                s = time.perf_counter()
                engine(ids, mask)
                forwards.append(time.perf_counter() - s)
        after = round_trip_ns(lib)
        us = (t.jobs["end_ns"] - t.jobs["start_ns"]).reshape(30, per_forward) / 1e3
        row = [np.median(sum(us[:, 15 * i + 1 + k] for i in range(FULL_LAYERS) for k, r in enumerate(LAYER_JOBS)
                             if r == role)) for role in roles]
        row += [np.median(forwards) * 1e6]
        windows["near" if max(before, after) < NEAR_NS else "far"].append(np.array(row))
    print(f"sparsity {a.sparsity}; us per forward, layers 0-{FULL_LAYERS - 1} summed; median over windows")
    print(f"{'op':<10} {'near':>8} {'far':>8} {'far - near':>10}")
    if not windows["near"] or not windows["far"]:
        print("only one placement seen:", {k: len(v) for k, v in windows.items()})
        return
    near, far = np.median(windows["near"], 0), np.median(windows["far"], 0)
    for name, n, f in zip(roles + ["forward"], near, far):
        print(f"{name:<10} {n:8.0f} {f:8.0f} {f - n:10.0f}")
    print(f"windows: near {len(windows['near'])}, far {len(windows['far'])}")


if __name__ == "__main__":
    main()
