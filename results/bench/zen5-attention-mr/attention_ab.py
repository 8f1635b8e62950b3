"""The fp32 attention kernel of two builds, taking turns as separate processes: median us per
`workbench_ext.attention.attention` call (all heads of a batch), per shape and thread count.

    python results/bench/zen5-attention-mr/attention_ab.py --base <checkout of the old build> [--rounds 4]

`--base` is a checkout whose extension is built in place; it goes first on PYTHONPATH in its
turns. Each turn times 1500 calls after 200 per case. One line per case and round: the two
medians and base / new (> 1: the new build is faster).
"""
from __future__ import annotations

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


if __name__ == "__main__":
    from workbench.bench.builds import ab_script

    ab_script(__doc__, CHILD, CASES, label=lambda c: f"B={c[0]} {c[1]}x{c[2]} S={c[3]} t={c[4]}", rounds=4)
