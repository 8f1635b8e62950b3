"""Which parallel jobs of a batch-1 forward the pool's worker took part in, in the first calls
after a 0.1 s pause, with the pool's sleep-apart off and on (`pool.trace()`: per job, how many
of its chunks the worker ran). DistilBERT-base int8, 2 threads.
Usage: python results/bench/zen4-wake/trace_after_pause.py [--seq 16] [--cycles 6]
"""
from __future__ import annotations

import argparse
import time

from wake_ab import batch1_engine  # this folder's A/B script (its setup)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--cycles", type=int, default=6)
    a = p.parse_args()
    eng, ids, mask = batch1_engine("distilbert", a.seq)
    import numpy as np

    from workbench_ext import pool

    for on in (False, True):
        pool._set_sleep_apart(on)
        print(f"sleep-apart {'on' if on else 'off'}, seq {a.seq}: each cycle a 0.1 s pause, then one forward")
        for _ in range(a.cycles):
            time.sleep(0.1)
            t = time.perf_counter()
            with pool.trace() as tr:
                eng(ids, mask)
            ms = (time.perf_counter() - t) * 1e3
            j = tr.jobs
            helped = np.flatnonzero(j["by_workers"] > 0)
            first = f"job {helped[0]} of {len(j)}, {(j['start_ns'][helped[0]] - j['start_ns'][0]) / 1e3:.0f} us in" if len(helped) else "never"
            print(f"  {ms:.2f} ms; worker ran {j['by_workers'].sum()}/{j['chunks'].sum()} chunks; its first: {first}; "
                  "per job: " + " ".join(str(b) for b in j["by_workers"][:24]) + " ...")
    pool._set_sleep_apart(True)


if __name__ == "__main__":
    main()
