"""The dense AMX GEMMs with and without streaming stores of their outputs, in one process,
taking turns (needs a build with streaming_stores.patch, which adds
`workbench_ext.int8._set_amx_nt`). Outputs 64-byte aligned, as the compiled encoder's buffers
are (the patch streams only aligned rows). 15 rounds, each cell the median of 5 calls.

    git apply results/bench/spr-amx/output-writes/streaming_stores.patch   # on bac4a26
    python setup.py -q build_ext --inplace   # (from a worktree: PYTHONPATH=<worktree> for the scripts)
    python results/bench/spr-amx/output-writes/gemm_streaming.py
"""
import os
import statistics

os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np  # noqa: E402

from workbench.bench.gemm import _time  # noqa: E402
from workbench_ext import int8  # noqa: E402


def aligned(shape):
    nb = shape[0] * shape[1] * 4
    buf = np.empty(nb + 64, np.uint8)
    off = (-buf.ctypes.data) % 64
    return buf[off:off + nb].view(np.float32).reshape(shape)


rng = np.random.default_rng(0)
layers = []
for k, n in ((768, 3072), (768, 2304), (3072, 768)):
    x = rng.standard_normal((128, k)).astype(np.float32)
    w = rng.integers(-127, 128, size=(n, k)).astype(np.int8)
    layers.append((k, n, x, int8.DenseInt8Linear(w, np.full(n, 0.01, np.float32), None, isa="amx"), aligned((128, n))))
res = {}
for r in range(15):
    for k, n, x, layer, out in layers:
        for nt in (1, 2):
            for on in ((0, 1) if r % 2 else (1, 0)):
                int8._set_amx_nt(on)
                res.setdefault((k, n, nt, on), []).append(_time(lambda: layer(x, num_threads=nt, out=out), 5, 1)[0])
int8._set_amx_nt(0)
for k, n, x, layer, out in layers:
    for nt in (1, 2):
        a, b = statistics.median(res[k, n, nt, 0]), statistics.median(res[k, n, nt, 1])
        rat = sorted(np.array(res[k, n, nt, 0]) / np.array(res[k, n, nt, 1]))
        print(f"128x{k}x{n} t={nt}: stores {2*128*k*n/a/1e12:.2f} TOP/s, streaming stores {2*128*k*n/b/1e12:.2f} TOP/s, "
              f"per-round ratio median {rat[len(rat)//2]:.3f}")
