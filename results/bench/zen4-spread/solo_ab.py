"""Does parking the caller shorten a forward whose worker another task preempts? An A/B in turns.

A second process stands in for the kernel thread that preempts our worker on this VM (kdamond:
10-20 ms bursts every 2-3 s, run_delay.txt): pinned to one vCPU, it sleeps --hog-every seconds,
then spins --hog-ms ms, over and over (--hog-ms 0: no such process, the quiet case). Meanwhile
this process runs back-to-back batch-1 forwards of DistilBERT-base int8 at --sparsity (2 threads)
in windows of 0.5 s, the windows alternating between the pool's caller parking after 100 us
(`pool.set_park_us(100)`, wb_pool_impl.h) and never parking (0, the pool before). Prints, per
mode, the calls, mean, median, 99th percentile and max in ms, the share of calls over 1.4x the
never-park median, and how many jobs the caller parked in.
Usage: python results/bench/zen4-spread/park_ab.py [--seconds 120] [--hog-ms 15] [--hog-every 0.25]
"""
from __future__ import annotations

import argparse
import os
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
SOLO = (int(os.environ.get("SOLO_WAIT_US", 200)), int(os.environ.get("SOLO_HOLD_US", 2000)))
MODES = {f"solo {SOLO[0]}/{SOLO[1]} us": SOLO, "off": (0, 0)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--hog-ms", type=float, default=15, help="the burst (0: no hog process)")
    p.add_argument("--hog-every", type=float, default=0.25, help="seconds of sleep between bursts")
    p.add_argument("--hog-cpu", type=int, default=1)
    a = p.parse_args()
    engine, ids, mask, _ = one_warm_engine(a.sparsity)
    from workbench_ext import pool

    hog = subprocess.Popen([sys.executable, "-c", HOG, str(a.hog_cpu), str(a.hog_every), str(a.hog_ms)]) \
        if a.hog_ms > 0 else None
    times: dict[str, list[float]] = {m: [] for m in MODES}
    parks = dict.fromkeys(MODES, 0)
    try:
        end, k = time.time() + a.seconds, 0
        while time.time() < end:
            mode = list(MODES)[k % 2]
            k += 1
            pool._set_solo(*MODES[mode])
            p0, t_end = pool._solo_jobs(), time.time() + 0.5
            while time.time() < t_end:
                t = time.perf_counter()
                engine(ids, mask)
                times[mode].append((time.perf_counter() - t) * 1e3)
            parks[mode] += pool._solo_jobs() - p0
    finally:
        if hog is not None:
            hog.kill()
        pool._set_solo(0, 0)
    base = float(np.median(times["off"]))
    print(f"sparsity {a.sparsity}, hog: " + (f"{a.hog_ms} ms every {a.hog_every} s on cpu {a.hog_cpu}" if hog else "none")
          + f", {a.seconds:.0f} s in 0.5 s windows taking turns")
    print("mode                calls   mean_ms median_ms  p99_ms  max_ms  slow(>1.4x)  parks")
    for mode, ts in times.items():
        x = np.array(ts)
        print(f"{mode:18s} {len(x):6d} {x.mean():9.3f} {np.median(x):9.3f} {np.percentile(x, 99):7.2f} "
              f"{x.max():7.2f} {np.mean(x > 1.4 * base):11.4f} {parks[mode]:6d}")


if __name__ == "__main__":
    main()
