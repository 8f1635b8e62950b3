"""Where a slow batch-1 forward's time goes, thread by thread: for --seconds of back-to-back
90 %-sparse forwards (DistilBERT-base int8, 2 threads), each call's time, the pool worker's share
of the chunks, and from /proc/<pid>/task/<tid>/schedstat how long the worker and the caller
waited on the guest's run queue (runnable, but another task held the vCPU) and how long the
worker ran. A slow call with a long run-queue wait lost its core to another task in the guest; one
with no wait and a short run time had a worker that was neither running nor waiting in the guest
(asleep between jobs, or its vCPU not running on the host).
Usage: python results/bench/zen4-spread/run_delay.py [--seconds 40] [--sparsity 0.9] > run_delay.txt
       python results/bench/zen4-spread/run_delay.py --summarize run_delay.txt   (the slow calls' groups)
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from phases import one_warm_engine  # noqa: E402


def schedstat(path: str) -> tuple[int, int]:
    """(ns on the CPU, ns waiting on a run queue) of one thread."""
    ran, waited, _ = (int(x) for x in open(path).read().split())
    return ran, waited


WAITED_US = 500
"""A slow call whose worker waited longer than this on the run queue lost its vCPU in the guest."""
HEADER = "ms share worker_wait_us worker_ran_us caller_wait_us"


def print_groups(slow: np.ndarray) -> None:
    """The slow calls (rows of HEADER's columns) split by whether the worker waited on the run
    queue: per group the count and the medians."""
    for name, rows in (("worker waited > 0.5 ms on the run queue", slow[slow[:, 2] > WAITED_US]),
                       ("worker did not wait", slow[slow[:, 2] <= WAITED_US])):
        if len(rows):
            print(f"slow calls, {name}: {len(rows)}, medians: {np.median(rows[:, 0]):.2f} ms (max "
                  f"{rows[:, 0].max():.2f}), share {np.median(rows[:, 1]):.2f}, worker waited "
                  f"{np.median(rows[:, 2]):.0f} us (max {rows[:, 2].max():.0f}), ran {np.median(rows[:, 3]):.0f} us")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=40)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--summarize", metavar="FILE", help="the slow calls' groups from an earlier run's output")
    a = p.parse_args()
    if a.summarize:
        lines = open(a.summarize).read().splitlines()
        rows = lines[lines.index(HEADER) + 1:]
        print_groups(np.array([[float(v) for v in ln.split()] for ln in rows if ln.strip()]).reshape(-1, 5))
        return
    engine, ids, mask, _ = one_warm_engine(a.sparsity)
    from workbench_ext import pool

    pid = os.getpid()
    paths = {p.split("/")[4]: p for p in glob.glob(f"/proc/{pid}/task/*/schedstat")}
    before = {t: schedstat(p) for t, p in paths.items()}
    engine(ids, mask)
    # the pool's worker: the thread other than this one that ran most during a forward
    worker = max((t for t in paths if t != str(pid)), key=lambda t: schedstat(paths[t])[0] - before[t][0])
    wpath, cpath = paths[worker], paths[str(pid)]
    rows = []
    end = time.time() + a.seconds
    while time.time() < end:
        w0, c0, s0 = schedstat(wpath), schedstat(cpath), pool.stats()
        t = time.perf_counter()
        engine(ids, mask)
        ms = (time.perf_counter() - t) * 1e3
        w1, c1, s1 = schedstat(wpath), schedstat(cpath), pool.stats()
        by_caller = s1["chunks_by_caller"] - s0["chunks_by_caller"]
        by_worker = s1["chunks_by_workers"] - s0["chunks_by_workers"]
        rows.append((ms, by_worker / max(1, by_caller + by_worker), (w1[1] - w0[1]) / 1e3, (w1[0] - w0[0]) / 1e3,
                     (c1[1] - c0[1]) / 1e3))
    r = np.array(rows)
    med = float(np.median(r[:, 0]))
    slow = r[r[:, 0] > 1.4 * med]
    print(f"{len(r)} calls, median {med:.2f} ms; slow (> 1.4x the median): {len(slow)}")
    print(f"all calls, medians: worker share {np.median(r[:, 1]):.2f}, worker ran {np.median(r[:, 3]):.0f} us, "
          f"worker run-queue wait {np.median(r[:, 2]):.0f} us, caller's {np.median(r[:, 4]):.0f} us")
    print_groups(slow)
    print(HEADER)
    for x in slow:
        print(f"{x[0]:.2f} {x[1]:.2f} {x[2]:.0f} {x[3]:.0f} {x[4]:.0f}")


if __name__ == "__main__":
    main()
