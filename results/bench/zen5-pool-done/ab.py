"""The pool's `done` counter: added to once per thread per job (the default since 2026-12-06) or
once per chunk (`workbench_ext.pool._set_done_per_chunk(True)`, the pool before), on whole
forwards of the same engine, one process, taking turns.

    python results/bench/zen5-pool-done/ab.py [batch] [threads] [engines,...] >> ab.txt

DistilBERT-base shape, sequence 128, the bench's dense, 90 % and 16x64-tile engines. The logits of
both settings are compared first (the counter changes no bit). Printed per engine: each setting's
median ms per forward, and the per-chunk setting's time over the default's (median of the
per-round ratios; > 1: the default is faster)."""
from __future__ import annotations

import os
import sys

threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
os.environ.setdefault("OMP_NUM_THREADS", str(threads))

import numpy as np  # noqa: E402

from workbench.bench.in_process import bench_engine, time_in_turns  # noqa: E402


def main(batch: int) -> None:
    from workbench.bench.placement import round_trip_ns
    from workbench_ext import pool

    print(f"vCPU round trip at the start: {round_trip_ns():.0f} ns", flush=True)

    calls = 10 if batch == 1 else 3
    for name in (sys.argv[3].split(",") if len(sys.argv) > 3 else ("wb-int8", "wb-int8-sp90", "wb-int8-tile90")):
        engine, feed = bench_engine(name, batch, threads)

        def counting(per_chunk: bool):
            def run(f):
                pool._set_done_per_chunk(per_chunk)
                try:
                    return engine.run(f)
                finally:
                    pool._set_done_per_chunk(False)
            return run

        runs = {"per-thread": counting(False), "per-chunk": counting(True)}
        want = runs["per-thread"](feed)
        assert np.array_equal(runs["per-chunk"](feed), want), f"{name}: the counter changed the logits"
        times = time_in_turns(runs, [feed] * calls, 15)
        mine, old = np.array(times["per-thread"]), np.array(times["per-chunk"])
        print(f"{name} batch {batch} threads {threads}: per-thread {np.median(mine) * 1e3 / calls:.3f} ms, "
              f"per-chunk {np.median(old) * 1e3 / calls:.3f} ms ({np.median(old / mine):.3f}x)", flush=True)
    print(f"vCPU round trip at the end: {round_trip_ns():.0f} ns", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
