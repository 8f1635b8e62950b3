"""Which jobs of a slow forward took the extra time, with a stand-in for the task that preempts our
threads on this VM.

A second process pinned to --hog-cpu sleeps --hog-every seconds, then spins --hog-ms ms, over and
over (the kernel's kdamond runs 10-20 ms bursts every 2-3 s here: run_delay.txt; the stand-in
runs more often, so that a minute gives a few hundred slow forwards). Meanwhile this process runs
back-to-back batch-1 forwards of DistilBERT-base int8 at --sparsity on 2 threads, each inside
`workbench_ext.pool.trace`. The typical duration of every job (op) comes from the forwards within
1.1x the median; for each forward over 1.4x the median it prints how much longer than typical its
jobs took in all, its four jobs with the most extra time, with the share of their chunks the worker
ran (0.5 the usual; 1.0: the worker ran them all, so the caller was the thread held up; 0: the
caller ran them all), and how many jobs took over twice their typical time. Then the slow forwards
are counted by kind:
"one job" (one job holds >= 60 % of the extra: a thread lost its vCPU inside a chunk the other had
to wait for), "spread" (the extra is spread over many jobs: a thread ran slowly for a while), and
the jobs that one thread ran alone are counted in slow and typical forwards.
Usage: python results/bench/zen4-spread/stall_trace.py [--seconds 30] [--hog-ms 15] [--hog-every 0.25]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from phases import one_warm_engine  # noqa: E402

HOG = """
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
every, ms = float(sys.argv[2]), float(sys.argv[3]) / 1e3
while True:
    time.sleep(every)
    t = time.perf_counter()
    while time.perf_counter() - t < ms:
        pass
"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--hog-ms", type=float, default=15)
    p.add_argument("--hog-every", type=float, default=0.25)
    p.add_argument("--hog-cpu", type=int, default=1)
    p.add_argument("--show", type=int, default=25, help="slow forwards to print one by one")
    a = p.parse_args()
    engine, ids, mask, _ = one_warm_engine(a.sparsity)
    from workbench_ext import pool

    hog = subprocess.Popen([sys.executable, "-c", HOG, str(a.hog_cpu), str(a.hog_every), str(a.hog_ms)])
    calls = []   # (ms, per-job µs, per-job worker share)
    try:
        end = time.time() + a.seconds
        while time.time() < end:
            with pool.trace(2000) as t:
                t0 = time.perf_counter_ns()
                engine(ids, mask)
                t1 = time.perf_counter_ns()
            j = t.jobs
            calls.append(((t1 - t0) / 1e6, (j["end_ns"] - j["start_ns"]) / 1e3,
                          j["by_workers"] / np.maximum(1, j["chunks"])))
    finally:
        hog.kill()
    ms = np.array([c[0] for c in calls])
    med = float(np.median(ms))
    typical = np.median(np.stack([c[1] for c in calls if c[0] < 1.1 * med]), axis=0)
    slow = [c for c in calls if c[0] > 1.4 * med]
    print(f"hog {a.hog_ms} ms every {a.hog_every} s on cpu {a.hog_cpu}; sparsity {a.sparsity}; {len(calls)} forwards, "
          f"median {med:.2f} ms, {len(typical)} jobs each (typical sum {typical.sum() / 1e3:.2f} ms); "
          f"{len(slow)} over 1.4x the median")
    kinds = {"one job": [], "spread": []}
    for i, (t_ms, dur, share) in enumerate(slow):
        extra = dur - typical
        top = np.argsort(extra)[::-1][:4]
        kinds["one job" if extra[top[0]] >= 0.6 * extra.sum() else "spread"].append((t_ms, extra[top[0]] / 1e3, share))
        if i < a.show:
            print(f"{t_ms:6.2f} ms  jobs' extra {extra.sum() / 1e3:5.2f} ms; most: "
                  + ", ".join(f"job {k} +{extra[k] / 1e3:.2f} ms (worker share {share[k]:.2f})" for k in top)
                  + f"; jobs over 2x typical: {int((dur > 2 * typical + 20).sum())}")
    for kind, rows in kinds.items():
        if rows:
            print(f"{kind}: {len(rows)} forwards, median {np.median([r[0] for r in rows]):.2f} ms, "
                  f"their largest job's extra median {np.median([r[1] for r in rows]):.2f} ms")
    for name, group in (("slow", slow), ("typical", [c for c in calls if c[0] < 1.1 * med])):
        alone = [(np.sum(c[2] < 0.01), np.sum(c[2] > 0.99)) for c in group]
        print(f"{name} forwards: jobs run by the caller alone (share 0) median {np.median([x[0] for x in alone]):.0f}, "
              f"by the worker alone (share 1) median {np.median([x[1] for x in alone]):.0f}")


if __name__ == "__main__":
    main()
