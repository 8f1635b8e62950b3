"""Where batch-1 time goes on short inputs: the fp32 attention kernel alone, and one traced
forward of a 90 %-sparse MiniLM.

    python results/bench/zen4-whole-forward/short_inputs.py [--part attention|trace|both]

`attention`: all heads of one layer (12 heads of 32, batch 1, no padding), one
`workbench_ext.attention.attention` call, median of 2700 calls after 300, on 1 and 2 threads, at
16 / 26 / 64 / 128 tokens. Run it from another checkout (`PYTHONPATH=<checkout>`) to time another
build of the kernel.
`trace`: MiniLM-L6 (the embedded weights) pruned to 90 % in 1x4 blocks, compiled int8 with
`kernel_choice="measure"` at (1, 26), 2 threads, 26 tokens: the forward's median over 2000
calls, then one forward under `workbench_ext.pool.trace()`: how long its parallel jobs ran, and
how much of the forward ran outside them (on one thread).
"""
from __future__ import annotations

import argparse
import time

import workbench  # noqa: F401  (first: the short OpenMP spin for torch's threads)
import numpy as np


def _median_us(fn, calls: int, skip: int) -> float:
    ts = []
    for _ in range(calls + skip):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts[skip:]) * 1e6)


def attention() -> None:
    from workbench_ext import attention as A

    rng = np.random.default_rng(0)
    nh, d = 12, 32
    print("attention, 12 heads of 32, batch 1: median us per call (1 thread, 2 threads)")
    for S in (16, 26, 64, 128):
        x = rng.standard_normal((1, S, 3, nh, d)).astype(np.float32)
        q, k, v = x[:, :, 0].transpose(0, 2, 1, 3), x[:, :, 1].transpose(0, 2, 3, 1), x[:, :, 2].transpose(0, 2, 1, 3)
        bias = np.zeros((1, 1, 1, S), np.float32)
        one, two = (_median_us(lambda n=n: A.attention(q, k, v, bias, num_threads=n), 2700, 300) for n in (1, 2))
        print(f"  {S:4d} tokens: {one:7.1f} {two:7.1f}", flush=True)


def trace() -> None:
    from workbench.bench.models import minilm, prune
    from workbench.runtime import compile_model
    from workbench_ext import pool

    engine = compile_model(prune(minilm(), 0.9), quantize=True, kernel_choice="measure", choice_shape=(1, 26))
    engine.num_threads = 2
    ids = np.random.default_rng(0).integers(1000, 20000, (1, 26))
    mask = np.ones_like(ids)
    forward = _median_us(lambda: engine(ids, mask), 2000, 300)
    with pool.trace() as t:
        engine(ids, mask)
    jobs = t.jobs
    span = (jobs["end_ns"][-1] - jobs["start_ns"][0]) / 1e3
    busy = float((jobs["end_ns"] - jobs["start_ns"]).sum() / 1e3)
    print(f"90 %-sparse MiniLM-L6, 26 tokens, batch 1, 2 threads ({engine.describe()['kernels_per_layer']}):")
    print(f"  forward median {forward:.0f} us; traced forward: {len(jobs)} parallel jobs, {busy:.0f} us in them "
          f"of a {span:.0f} us span; outside them {(span - busy) / engine.num_layers:.0f} us a layer; "
          f"the workers ran {jobs['by_workers'].sum() / jobs['chunks'].sum():.2f} of the chunks")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("attention", "trace", "both"), default="both")
    part = ap.parse_args().part
    if part in ("attention", "both"):
        attention()
    if part in ("trace", "both"):
        trace()


if __name__ == "__main__":
    main()
