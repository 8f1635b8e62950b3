"""The one-call forward (`Int8Encoder.classify_tokens`: input check and forward in one compiled
call) against the checked path (`check_inputs` in NumPy, then `Int8Encoder.classify`), on the
same engine in one process, taking turns (`workbench.bench.in_process.time_in_turns`).

    python results/bench/zen5-one-call/ab.py [rounds] [batches, e.g. 1,8] > results/bench/zen5-one-call/ab.txt

DistilBERT-base shape, sequence 128, 2 threads, the bench's engines; batch 1 and 8. Each cell:
a 0.1 s pause, untimed calls for 30 ms, then `CALLS` timed calls."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from workbench.bench.in_process import bench_engine, time_in_turns  # noqa: E402

CALLS = 10
ENGINES = ("wb-int8", "wb-int8-sp90", "wb-int8-tile90")


def runners(engine, feed):
    """{"one call": ..., "checked": ...}: the same engine with and without the one-call path."""
    e = engine.engine

    def checked(f):
        e._classify_in_one_call = lambda *a: None  # the instance attribute hides the method
        try:
            return engine.run(f)
        finally:
            del e._classify_in_one_call

    return {"one call": engine.run, "checked": checked}


def main(rounds: int, batches: tuple[int, ...]) -> None:
    print(f"rounds {rounds}, {CALLS} timed calls per cell; median ms per call (p10-p90 of the rounds)")
    print(f"{'engine':16s} {'batch':>5s} {'one call':>22s} {'checked':>22s} {'checked / one call':>20s}")
    for batch in batches:
        for name in ENGINES:
            engine, feed = bench_engine(name, batch, 2)
            times = time_in_turns(runners(engine, feed), [feed] * CALLS, rounds)
            ms = {k: np.array(v) / CALLS * 1e3 for k, v in times.items()}
            ratio = ms["checked"] / ms["one call"]
            cell = lambda a: f"{np.median(a):7.3f} ({np.percentile(a, 10):.3f}-{np.percentile(a, 90):.3f})"  # noqa: E731
            print(f"{name:16s} {batch:5d} {cell(ms['one call']):>22s} {cell(ms['checked']):>22s} "
                  f"{np.median(ratio):9.3f} ({np.percentile(ratio, 10):.3f}-{np.percentile(ratio, 90):.3f})",
                  flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20,
         tuple(int(b) for b in sys.argv[2].split(",")) if len(sys.argv) > 2 else (1, 8))
