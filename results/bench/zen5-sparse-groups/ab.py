"""The 1x4 sparse VNNI kernel's row groups per activation tile (`workbench_ext.int8.
_set_sparse_vnni_groups`: 0 = by K, the default: 4 groups, 2 where K > 1536, i.e. the FFN output;
1-4 = that many everywhere) on whole forwards, same engine, one process, taking turns.

    python results/bench/zen5-sparse-groups/ab.py [batch] >> ab.txt

DistilBERT-base shape, sequence 128, 2 threads, the bench's 80 % and 90 % engines. The logits of
every setting are compared with the default's first (the groups change no bit)."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from workbench.bench.in_process import bench_engine, time_in_turns  # noqa: E402


def main(batch: int) -> None:
    from workbench_ext import int8

    calls = 10 if batch == 1 else 3
    for name in ("wb-int8-sp80", "wb-int8-sp90"):
        engine, feed = bench_engine(name, batch, 2)

        def with_groups(g):
            def run(f):
                previous = int8._set_sparse_vnni_groups(g)
                try:
                    return engine.run(f)
                finally:
                    int8._set_sparse_vnni_groups(previous)
            return run

        runs = {f"g{g}": with_groups(g) for g in (0, 1, 2, 3, 4)}
        want = runs["g0"](feed)
        for label, run in runs.items():
            assert np.array_equal(run(feed), want), f"{name}: {label} changed the logits"
        times = time_in_turns(runs, [feed] * calls, 15)
        base = np.array(times["g0"])
        print(f"{name} batch {batch}: " + "; ".join(
            f"{k} {np.median(v) * 1e3 / calls:.3f} ms ({np.median(base / np.array(v)):.3f}x)" for k, v in times.items()),
            flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
