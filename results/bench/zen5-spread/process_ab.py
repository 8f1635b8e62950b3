"""One process's ratio of ORT int8 to our 90 %-sparse engine: both set up fresh (DistilBERT-base,
2 threads, sequence 128, batch from argv), then 6 rounds of 0.8 s each in turn (medians). Run in
many processes one after another (thp_ab.sh) it shows how much of the bench's run-to-run spread
belongs to the process (its memory layout, ...) rather than to the moment.
Each line ends with the vCPU placement (cache-line round trip before / after the turns), the
pool's worker share and the 90 % engine's kernel per Linear.
Usage: python results/bench/zen5-spread/process_ab.py 8
"""
import os, sys, time
os.environ["OMP_NUM_THREADS"]="2"
import numpy as np
from workbench.bench.in_process import bench_engine
batch=int(sys.argv[1])
# as the bench's worker sets them up: kernels chosen at this batch
engs={name: bench_engine(name, batch) for name in ("ort-int8-plain-pt","wb-int8-sp90")}
from workbench.bench.placement import round_trip_ns
from workbench_ext import pool
trip0 = round_trip_ns()
st0 = pool.stats()
res={n:[] for n in engs}
for r in range(6):
    for n,(eng,f) in engs.items():
        ts=[]; t1=time.time()
        while time.time()-t1<0.8:
            t=time.perf_counter(); eng.run(f); ts.append(time.perf_counter()-t)
        res[n].append(np.median(ts)*1e3)
o=np.array(res["ort-int8-plain-pt"]); s=np.array(res["wb-int8-sp90"])
st1, trip1 = pool.stats(), round_trip_ns()
w = st1["chunks_by_workers"] - st0["chunks_by_workers"]
c = st1["chunks_by_caller"] - st0["chunks_by_caller"]
kernels = engs["wb-int8-sp90"][0].notes.split("kernels ")[-1].split(" (")[0]
print(f"ort {np.median(o):.1f} sp90 {np.median(s):.1f} ms ratio {np.median(o/s):.2f} (rounds {np.min(o/s):.2f}-{np.max(o/s):.2f})"
      f"  worker share {w / max(1, w + c):.2f}, round trip {trip0:.0f}/{trip1:.0f} ns, kernels {kernels}", flush=True)
print("  AnonHugePages", [l.split()[1] for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHuge")], flush=True)
