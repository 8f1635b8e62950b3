"""CLDEMOTE of the dense AMX kernel's weights after a panel pair's last row block, so that they
would leave L2 to the activations and outputs: DistilBERT's four GEMM shapes (M = 128), 2 threads,
15 rounds taking turns, TOP/s of the median call.  Modes: 0 the kernel as it is; 1 each pair's
B lines demoted (32 CLDEMOTEs per K chunk of the last row block); 2 the same number of CLDEMOTEs
aimed at one 1 KB scratch block that stays hot, i.e. the instructions' own cost.

Run on an AMX CPU, from the repository root, on a build with `cldemote.patch` applied:
.venv/bin/python results/bench/spr-amx/negative/cldemote/demote_ab.py
"""
import os
import statistics
import sys

os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "emr-amx"))
import numpy as np  # noqa: E402
from amx_ab import gemm_layers, rotated  # noqa: E402

from workbench.bench.gemm import _time  # noqa: E402
from workbench_ext import int8  # noqa: E402

MODES = {0: "as is", 1: "B demoted", 2: "demotes of a hot 1 KB block"}
rng = np.random.default_rng(0)
for k, n, x, layer, out in gemm_layers(int8, "amx", rng):
    int8._set_amx_demote(0)
    ref = layer(x, num_threads=2).copy()
    for mode in MODES:
        int8._set_amx_demote(mode)
        assert np.array_equal(layer(x, num_threads=2), ref), "a hint changed the bits"
    times = {mode: [] for mode in MODES}
    for r in range(15):
        for mode in rotated(list(MODES), r):
            int8._set_amx_demote(mode)
            times[mode].append(_time(lambda: layer(x, num_threads=2, out=out), 5, 1)[0])
    int8._set_amx_demote(0)
    m = {mode: statistics.median(t) for mode, t in times.items()}
    print(f"128x{k}x{n} t=2: " + "; ".join(
        f"{MODES[mode]} {2 * 128 * k * n / m[mode] / 1e12:.2f} TOP/s ({m[0] / m[mode]:.2f}x)" for mode in MODES),
        flush=True)
