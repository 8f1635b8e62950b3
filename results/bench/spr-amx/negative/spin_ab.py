"""Worker spin A/B (README, third session): DistilBERT-base at `sys.argv[1]` sparsity (1x4), batch 1, 8 rounds taking turns
between the spins in `sys.argv[2]` (us, comma-separated); also the cost of pool.wake() after 2 ms idle.
Usage: python results/bench/spr-amx/negative/spin_ab.py 0.9 200,1000"""
import sys, time, numpy as np
sys.path.insert(0, "results/bench/emr-amx")
from forward_breakdown import _engine
import workbench_ext.pool as pool
e = _engine(float(sys.argv[1]), (1, 4))
rng = np.random.default_rng(0); mask = np.ones((1, 128), np.int64)
for _ in range(10): e(rng.integers(1000, 20000, (1, 128)), mask)
spins = [int(s) for s in sys.argv[2].split(",")]
res = {s: [] for s in spins}
wk = []
for rnd in range(8):
    for s in (spins if rnd % 2 else spins[::-1]):
        pool.set_spin_us(s)
        for _ in range(3): e(rng.integers(1000, 20000, (1, 128)), mask)
        ts = []
        for _ in range(25):
            ids = rng.integers(1000, 20000, (1, 128))
            t0 = time.perf_counter(); e(ids, mask); ts.append(time.perf_counter() - t0)
        res[s].append(np.median(ts) * 1e3)
pool.set_spin_us(200)
for _ in range(20):
    time.sleep(0.002); t0 = time.perf_counter_ns(); pool.wake(); wk.append((time.perf_counter_ns() - t0) / 1e3)
print("wake() after 2 ms idle: median us", np.median(wk), "min", min(wk))
wk = []
for _ in range(20):
    t0 = time.perf_counter_ns(); pool.wake(); wk.append((time.perf_counter_ns() - t0) / 1e3)
print("wake() back to back: median us", np.median(wk))
for s, v in res.items(): print(f"spin {s} us: forward median of round medians {np.median(v):.3f} ms  rounds {np.round(v, 3).tolist()}")
