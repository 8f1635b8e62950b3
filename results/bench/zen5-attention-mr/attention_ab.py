"""The fp32 attention kernel of two builds, taking turns as separate processes: median us per
`workbench_ext.attention.attention` call (all heads of a batch), per shape and thread count.

    python results/bench/zen5-attention-mr/attention_ab.py --base <checkout of the old build> [--rounds 4]

`--base` is a checkout whose extension is built in place; it goes first on PYTHONPATH in its
turns. Each turn times 1500 calls after 200 per case. One line per case and round: the two
medians and base / new (> 1: the new build is faster).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
import workbench  # noqa: F401  (first: the short OpenMP spin for torch's threads)
import numpy as np
from workbench_ext import attention as A
B, nh, d, S, nt = map(int, sys.argv[1:6])
rng = np.random.default_rng(0)
x = rng.standard_normal((B, S, 3, nh, d)).astype(np.float32)
q, k, v = x[:, :, 0].transpose(0, 2, 1, 3), x[:, :, 1].transpose(0, 2, 3, 1), x[:, :, 2].transpose(0, 2, 1, 3)
bias = np.zeros((B, 1, 1, S), np.float32)
ts = []
for i in range(1700):
    t = time.perf_counter()
    A.attention(q, k, v, bias, num_threads=nt)
    ts.append(time.perf_counter() - t)
print(float(np.median(ts[200:])) * 1e6)
"""

# (batch, heads, head_dim, tokens, threads): DistilBERT-base at 128 tokens, MiniLM at 26 and 128
CASES = [(1, 12, 64, 128, 2), (1, 12, 64, 128, 1), (8, 12, 64, 128, 2), (1, 12, 32, 26, 2), (1, 12, 32, 128, 2)]


def _median_us(pythonpath: str | None, case: tuple) -> float:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, case)], env=env, check=True,
                         capture_output=True, text=True, cwd="/")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    for case in CASES:
        B, nh, d, S, nt = case
        ratios = []
        for r in range(args.rounds):
            base = _median_us(os.path.abspath(args.base), case)
            new = _median_us(None, case)
            ratios.append(base / new)
            print(f"B={B} {nh}x{d} S={S} t={nt} round {r + 1}: base {base:8.1f} us, new {new:8.1f} us, "
                  f"base / new {base / new:.3f}", flush=True)
        print(f"B={B} {nh}x{d} S={S} t={nt}: median base / new {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})", flush=True)


if __name__ == "__main__":
    main()
