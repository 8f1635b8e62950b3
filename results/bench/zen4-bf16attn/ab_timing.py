"""Forward times of engines set up in this one process, interleaved round by round (0.1 s pause, then the first
forward after it "gap", the next one "gap2", then 3 untimed and one timed back to back "b2b"); medians in ms.
`python ab_timing.py MODEL THREADS ROUNDS ENGINE...` (OMP_NUM_THREADS=THREADS), e.g. distilbert 2 60 wb-int8 wb-int8-bf16attn
wb-int8-sp90 wb-int8-sp90-bf16attn; output of the runs: ab-timing.txt."""
import sys, time, statistics, json
from workbench.bench.worker import _Prepared
model, nt, n, engines = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
P = {}
for e in engines:
    p = _Prepared({"model": model, "engine": e, "threads": nt, "seq_len": 128, "runs": n, "batches": [1],
                   "warmup": 2, "cache_dir": "/tmp/ab/cache"})
    assert not p.error, p.error
    P[e] = (p, p.eng.feed(p.inputs[1]))
res = {e: {"b2b": [], "gap": [], "gap2": []} for e in engines}
for i in range(n):
    for e in engines:
        p, f = P[e]
        time.sleep(0.1)
        t = time.perf_counter(); p.run(f); t1 = time.perf_counter(); p.run(f); t2 = time.perf_counter()
        for _ in range(3): p.run(f)
        t3 = time.perf_counter(); p.run(f); t4 = time.perf_counter()
        res[e]["gap"].append(t1 - t); res[e]["gap2"].append(t2 - t1); res[e]["b2b"].append(t4 - t3)
for e in engines:
    print(e, {k: round(statistics.median(v) * 1e3, 2) for k, v in res[e].items()})
