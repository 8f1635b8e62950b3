"""The pool's threads kept apart (WORKBENCH_POOL_APART, wb_pool_impl.h) against not, in one
process, in turns: 0.5 s windows of back-to-back batch-1 forwards of DistilBERT-base int8 on 2
threads, alternating `pool.set_apart(True)` / `(False)`; with "hog" a busy process (not pinned)
shares the two vCPUs the whole time (3 runnable threads on 2 CPUs), with "none" the machine is
quiet. Prints per mode the calls, mean, median and 90th percentile in ms, and the worker's moves
per forward.
Usage: python results/bench/zen4-spread/apart_ab.py SPARSITY hog|none SECONDS
(The bench half of apart_ab.txt is `workbench bench ... --engines wb-int8,wb-int8-sp90 --runs 15`
run with WORKBENCH_POOL_APART=1 and =0 in turns; its first line gives the command.)
"""
import subprocess, sys, time
import numpy as np
sys.path.insert(0, "results/bench/zen4-spread")
from phases import one_warm_engine
engine, ids, mask, _ = one_warm_engine(float(sys.argv[1]))
from workbench_ext import pool
hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if sys.argv[2] == "hog" else None
res = {True: [], False: []}; moves = {True: 0, False: 0}; n = {True: 0, False: 0}
try:
    end = time.time() + float(sys.argv[3]); k = 0
    while time.time() < end:
        on = k % 2 == 0; k += 1
        pool.set_apart(on); m0 = pool.stats()["moves"]; te = time.time() + 0.5
        while time.time() < te:
            t = time.perf_counter(); engine(ids, mask); res[on].append((time.perf_counter() - t) * 1e3)
        moves[on] += pool.stats()["moves"] - m0; n[on] = len(res[on])
finally:
    if hog: hog.kill()
    pool.set_apart(True)
for on in (True, False):
    x = np.array(res[on])
    print(f"sparsity {sys.argv[1]} {sys.argv[2]:4s} apart={int(on)} calls {len(x)} mean {x.mean():.2f} median {np.median(x):.2f} p90 {np.percentile(x,90):.2f} moves/call {moves[on]/max(1,len(x)):.2f}")
