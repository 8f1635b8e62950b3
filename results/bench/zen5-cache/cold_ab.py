"""Does a forward's speed depend on its weights still being in the shared L3?  On these 2-vCPU
guests the L3 (32 MB on the Zen 5) is shared with other tenants, whose use of it comes and goes.
ORT int8's DistilBERT weights (~43 MB) cannot stay in it between forwards, a 90 %-sparse
engine's (~6 MB) can: if L3 residency matters, it would explain why our sparser engines' speed
moved more between bench runs than ORT's (results/bench/zen5-repeat2).

For each engine (DistilBERT-base, 2 threads, sequence 128, batch from argv), in turns, rounds
of: `warm` forwards back to back; `cold` forwards each after writing a 128 MB buffer (which
evicts everything the forward left in L1, L2 and L3; only the forward is timed); and `idle`
forwards each after a sleep as long as that write (caches untouched): any engine's threads fall
asleep during either, so cold - idle is what the caches cost.  Prints medians per engine.
Usage: python results/bench/zen5-cache/cold_ab.py [batch] [rounds]
"""
import os
import sys
import time

os.environ["OMP_NUM_THREADS"] = "2"
import numpy as np

from workbench.bench.in_process import bench_engine

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 1
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
engs = {name: bench_engine(name, batch) for name in ("ort-int8-plain-pt", "wb-int8", "wb-int8-sp90", "wb-int8-tile90")}

flush = np.ones(128 << 20 >> 3, np.float64)


def cold(eng, f) -> float:
    np.add(flush, 1.0, out=flush)   # read and write 128 MB: nothing of the last forward stays cached
    t = time.perf_counter()
    eng.run(f)
    return time.perf_counter() - t


def idle(eng, f) -> float:
    time.sleep(0.0045)   # as long as the flush, caches untouched: the pool's workers fall asleep
    t = time.perf_counter()   # either way (they spin 0.2 ms), so this is the wake-up alone
    eng.run(f)
    return time.perf_counter() - t


def warm(eng, f) -> float:
    t = time.perf_counter()
    eng.run(f)
    return time.perf_counter() - t


MODES = {"warm": warm, "idle": idle, "cold": cold}
res = {(n, m): [] for n in engs for m in MODES}
for r in range(rounds):
    cells = list(res)
    k = r % len(cells)
    for n, m in cells[k:] + cells[:k]:
        eng, f = engs[n]
        fn = MODES[m]
        fn(eng, f)   # one untimed: a warm forward follows a warm one
        res[n, m].append(np.median([fn(eng, f) for _ in range(15)]) * 1e3)
print(f"batch {batch}, {rounds} rounds of 15 forwards per cell; medians of the round medians (ms), "
      "min-max over rounds in brackets", flush=True)
for n in engs:
    w, i, c = (np.array(res[n, m]) for m in MODES)
    print(f"{n:20s} warm {np.median(w):6.2f} ({w.min():.2f}-{w.max():.2f})  idle {np.median(i):6.2f} "
          f"({i.min():.2f}-{i.max():.2f})  cold {np.median(c):6.2f} ({c.min():.2f}-{c.max():.2f})  "
          f"idle/warm {np.median(i) / np.median(w):.3f}  cold/warm {np.median(c) / np.median(w):.3f}", flush=True)
