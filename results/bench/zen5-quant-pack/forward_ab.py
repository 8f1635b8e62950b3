"""Two builds of the extension, taking turns as separate processes: the median batch-1 forward of a
90 %-sparse model on 2 threads, each build's engine compiled with every Linear on the block-sparse
kernel (kernel_choice="sparse", so both builds run the same kernels).

    python results/bench/zen5-quant-pack/forward_ab.py --base <checkout of the old build> [--rounds 6]

`--base` is a checkout with its extension built in place (a `git worktree` of the older commit,
`python setup.py build_ext --inplace` there); it goes first on PYTHONPATH in its turns. Each turn
builds its engine, warms up 20 calls, then times forwards for `--seconds`. One line per round:
the two medians and base / new (> 1: the new build is faster); `forward_ab.txt` was
printed by this script's first version, the same numbers in another layout.
"""
from __future__ import annotations

CHILD = r"""
import sys, time
import workbench  # noqa: F401  (first: the short OpenMP spin for torch's threads)
import numpy as np
from workbench.bench.models import distilbert, minilm, prune
from workbench.runtime import compile_model
name, sparsity, seq, secs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
engine = compile_model(prune({"distilbert": distilbert, "minilm": minilm}[name](), sparsity),
                       quantize=True, kernel_choice="sparse")
engine.num_threads = 2
ids = np.random.default_rng(0).integers(1000, 20000, (1, seq))
mask = np.ones_like(ids)
for _ in range(20):
    engine(ids, mask)
times, t0 = [], time.perf_counter()
while time.perf_counter() - t0 < secs:
    t = time.perf_counter()
    engine(ids, mask)
    times.append(time.perf_counter() - t)
print(float(np.median(times)) * 1e6)
"""

CASES = [("distilbert", 0.9, 128, 6.0), ("minilm", 0.9, 26, 4.0)]


if __name__ == "__main__":
    from workbench.bench.builds import ab_script

    ab_script(__doc__, CHILD, CASES, label=lambda c: f"{c[0]} {c[1]:.0%} sparse, {c[2]} tokens, batch 1, 2 threads", rounds=6)
