"""Back-to-back and idle-gap timing of one engine in this process: python direct.py MODEL ENGINE MODE N"""
import os, sys, time, statistics, json
os.environ.setdefault("OMP_NUM_THREADS", "2")
import workbench_ext  # OpenMP defaults
from workbench.bench.worker import _Prepared
model, engine, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
p = _Prepared({"model": model, "engine": engine, "threads": 2, "seq_len": 128, "runs": n, "batches": [1],
               "warmup": 2, "cache_dir": "/tmp/ab/cache"})
assert not p.error, p.error
feed = p.eng.feed(p.inputs[1])
for _ in range(5): p.run(feed)
ts = []
for i in range(n):
    if mode in ("gap", "gapfirst"):
        time.sleep(0.1)
    if mode == "gap":
        p.run(feed)                # untimed: the first forward after the pause
    t = time.perf_counter(); p.run(feed); ts.append(time.perf_counter() - t)
ts.sort()
q = lambda f: ts[int(f * (len(ts) - 1))] * 1e3
print(json.dumps({"model": model, "engine": engine, "mode": mode, "build": workbench_ext.__file__.split('/')[1:3],
                  "median_ms": round(q(0.5), 2), "p5": round(q(0.05), 2), "p95": round(q(0.95), 2),
                  "spread_p5_p95_pct": round(100 * (q(0.95) - q(0.05)) / q(0.5), 1)}))
