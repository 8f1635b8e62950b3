"""How much a neighbour that sweeps memory on the other vCPU slows each engine (1 thread, pinned
to CPU 0, DistilBERT-base, sequence 128). Conditions take turns each round: quiet, a neighbour
reading 4 MB (lives in L3), one reading 64 MB (streams from memory), one writing 64 MB.
Usage: gcc -O2 thrash.c -o /tmp/thrash && python probe.py [batch] [rounds] > probe_bB-N.txt
(probe_b1-N.txt: `probe.py 1 4`; probe_b8-N.txt: `probe.py 8 3`.)
"""
import os, subprocess, sys, time
os.environ["OMP_NUM_THREADS"] = "1"
os.sched_setaffinity(0, {0})
import numpy as np
from workbench.bench.in_process import bench_engine, time_in_turns

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 1
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
names = ("ort-int8-plain-pt", "wb-int8", "wb-int8-sp90", "wb-int8-tile90")
engs = {n: bench_engine(n, batch, threads=1) for n in names}
runners = {n: (lambda f, e=e: e.run(f)) for n, (e, f) in engs.items()}
conds = {"quiet": None, "read 4 MB": ["4"], "read 64 MB": ["64"], "write 64 MB": ["64", "w"]}
res = {c: {n: [] for n in names} for c in conds}
for r in range(rounds):
    for c, args in conds.items():
        p = None
        if args:
            p = subprocess.Popen(["taskset", "-c", "1", "/tmp/thrash", *args])
            time.sleep(0.3)
        t = time_in_turns({n: (lambda _, n=n: [runners[n](engs[n][1]) for _ in range(5)]) for n in names},
                          [None], 1, pause_s=0.05, warm_s=0.2)
        for n in names:
            res[c][n].append(t[n][0] / 5 * 1e3)
        if p:
            p.kill(); p.wait()
print(f"batch {batch}, {rounds} rounds, ms per forward (median of rounds), slowdown against quiet")
print("| condition | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for c in conds:
    cells = []
    for n in names:
        m, q = np.median(res[c][n]), np.median(res["quiet"][n])
        cells.append(f"{m:.2f} ({m / q:.2f}x)")
    print(f"| {c} | " + " | ".join(cells) + " |")
