"""The dense AMX kernel with the tile-load switches that `kernel_loop.c` tried on the bare loop,
now with its epilogue: DistilBERT's four GEMM shapes (M = 128), 2 threads, 15 rounds taking
turns, TOP/s of the median call and the speed over the default.

Run from the repository root on an AMX CPU: .venv/bin/python results/bench/spr-amx/tile-loads/kernel_switches_ab.py
"""
import os
import statistics
import sys

os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "emr-amx"))
import numpy as np  # noqa: E402
from amx_ab import gemm_layers, rotated  # noqa: E402

from workbench.bench.gemm import _time  # noqa: E402
from workbench_ext import int8  # noqa: E402

# name: (pipelined worker, item order, (a_packed, a_ahead, b_ahead, b_next)); the first is the default
VARIANTS = {
    "default": (1, 0, (0, 2, 0, 1)),
    "no-A-prefetch": (1, 0, (0, 0, 0, 1)),
    "A-tile-order-no-prefetch": (1, 0, (1, 0, 0, 1)),
    "row-blocks-outer-no-prefetch": (1, 1, (0, 0, 0, 0)),
    "row-blocks-outer-A-tile-order": (1, 1, (1, 0, 0, 0)),
}


def setv(v) -> None:
    int8._set_amx_pipelined(v[0])
    int8._set_amx_order(v[1], 1 << 20)
    int8._set_amx_tuning(*v[2])


def main() -> None:
    rng = np.random.default_rng(0)
    for k, n, x, layer, out in gemm_layers(int8, "amx", rng):
        setv(VARIANTS["default"])
        ref = layer(x, num_threads=2).copy()
        times = {name: [] for name in VARIANTS}
        for name, v in VARIANTS.items():
            setv(v)
            if not np.array_equal(layer(x, num_threads=2), ref):
                print(f"MISMATCH 128x{k}x{n} {name}: not the default's bits", flush=True)
        for r in range(15):
            for name in rotated(list(times), r):
                setv(VARIANTS[name])
                times[name].append(_time(lambda: layer(x, num_threads=2, out=out), 5, 1)[0])
        setv(VARIANTS["default"])
        base = statistics.median(times["default"])
        print(f"128x{k}x{n} t=2: " + "; ".join(
            f"{name} {2 * 128 * k * n / statistics.median(v) / 1e12:.2f} TOP/s ({base / statistics.median(v):.2f}x)"
            for name, v in times.items()), flush=True)


if __name__ == "__main__":
    main()
