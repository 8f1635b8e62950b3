"""One fresh process: one of the bench's engines (DistilBERT-base, 2 threads, sequence 128; a
workbench engine with every Linear on the kernel `choice` names, default `sparse` for the 1x4
block-sparse kernel: no timed choice, so every process runs the same kernels), then 12 rounds of
0.5 s of back-to-back forwards at the batch given; prints the median ms per forward, the rounds'
range and the vCPUs' placement (cache-line round trip) before and after.
Usage: python one_process.py BATCH [ENGINE [CHOICE]]   (run.sh runs it in many processes)"""
import os, sys, time
os.environ["OMP_NUM_THREADS"] = "2"
import numpy as np
from workbench.bench import engines
from workbench.bench.in_process import bench_engine
from workbench.bench.placement import round_trip_ns

batch = int(sys.argv[1])
name = sys.argv[2] if len(sys.argv) > 2 else "wb-int8-sp90"
engines.Workbench.kernel_choice = sys.argv[3] if len(sys.argv) > 3 else "sparse"
eng, feed = bench_engine(name, batch)
trip0 = round_trip_ns()
med = []
for r in range(12):
    ts = []; t1 = time.time()
    while time.time() - t1 < 0.5:
        t = time.perf_counter(); eng.run(feed); ts.append(time.perf_counter() - t)
    med.append(np.median(ts) * 1e3)
print(f"{name} median {np.median(med):.2f} ms (rounds {min(med):.2f}-{max(med):.2f}) trip {trip0:.0f}/{round_trip_ns():.0f} ns",
      flush=True)
