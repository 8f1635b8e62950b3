"""A/B of the pool's sleep-apart (a sleeping worker narrows its affinity away from the caller's
CPU until it wakes): DistilBERT-base (or the embedded MiniLM) int8 forwards at batch 1 after a pause, as requests that
come a few per second see them.

In one process, the two modes take turns: each cycle sets the mode, sleeps `--pause` seconds,
then times `--calls` forwards back to back, recording each call's time, the share of the
parallel jobs' chunks the worker ran, and how often the worker had to move off the caller's CPU
at a job's start (`pool.stats()["moves"]`). Prints medians (and p90) per call position.
With `--contend 1` a busy process shares the cores meanwhile (workbench.bench.contention).
Usage: python results/bench/zen4-wake/wake_ab.py --seq 16 [--model minilm] [--sparsity 0.9] [--seconds 40] [--contend 1]
"""
from __future__ import annotations

import argparse
import os
import time


def batch1_engine(model: str = "distilbert", seq: int = 16, sparsity: float = 0.0):
    """(engine, ids, mask): `model` ("distilbert" or "minilm"), pruned to `sparsity` in 1x4
    blocks, compiled to int8 on 2 threads with its kernels measured at batch 1 x `seq`."""
    os.environ["OMP_NUM_THREADS"] = "2"
    import numpy as np
    import torch

    from workbench.bench import models
    from workbench.recipes.prune.magnitude import magnitude_prune_
    from workbench.runtime import compile_model

    torch.set_num_threads(2)
    net = getattr(models, model)()
    if sparsity:
        magnitude_prune_(net, sparsity, block=(1, 4))
    eng = compile_model(net, quantize=True, kernel_choice="measure", choice_shape=(1, seq))
    eng.num_threads = 2
    ids = np.random.default_rng(0).integers(1000, 20000, size=(1, seq))
    return eng, ids, np.ones((1, seq), np.int64)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--model", choices=("distilbert", "minilm"), default="distilbert")
    p.add_argument("--sparsity", type=float, default=0.0)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--pause", type=float, default=0.1)
    p.add_argument("--contend", type=int, default=0)
    a = p.parse_args()
    eng, ids, mask = batch1_engine(a.model, a.seq, a.sparsity)
    import numpy as np

    from workbench.bench.contention import busy_processes
    from workbench_ext import pool

    rows: dict[int, list] = {0: [], 1: []}
    with busy_processes(a.contend):
        i = _alternate(a, eng, ids, mask, rows, pool)
    pool._set_sleep_apart(True)
    print(f"{a.model}, seq {a.seq}, sparsity {a.sparsity}, pause {a.pause} s, pool spin {pool.spin_us()} us, "
          f"{a.contend} busy process(es), {i // 2} cycles per mode")
    for mode in (0, 1):
        r = np.array(rows[mode])
        cells = [f"call {c}: {np.median(r[:, c, 0]):.2f} ms (p90 {np.percentile(r[:, c, 0], 90):.2f}), "
                 f"worker share {np.median(r[:, c, 1]):.2f}, moves {r[:, c, 2].mean():.2f}" for c in range(a.calls)]
        print(f"  sleep-apart {'on ' if mode else 'off'}: " + "; ".join(cells))
    on, off = np.array(rows[1]), np.array(rows[0])
    print("  off / on, medians: " + ", ".join(
        f"call {c} {np.median(off[:, c, 0]) / np.median(on[:, c, 0]):.2f}x" for c in range(a.calls)))


def _alternate(a, eng, ids, mask, rows: dict, pool) -> int:
    """The cycles, modes alternating, until `a.seconds` have passed; returns how many ran."""
    end, i = time.time() + a.seconds, 0
    while time.time() < end:
        mode = i % 2
        i += 1
        pool._set_sleep_apart(bool(mode))
        time.sleep(a.pause)
        calls = []
        for _ in range(a.calls):
            s0 = pool.stats()
            t = time.perf_counter()
            eng(ids, mask)
            dt = time.perf_counter() - t
            s1 = pool.stats()
            w = s1["chunks_by_workers"] - s0["chunks_by_workers"]
            c = s1["chunks_by_caller"] - s0["chunks_by_caller"]
            calls.append((dt * 1e3, w / (w + c) if w + c else float("nan"), s1["moves"] - s0["moves"]))
        rows[mode].append(calls)
    return i


if __name__ == "__main__":
    main()
