"""Whole forwards of one pruned DistilBERT compiled with several kernel_choice modes, taking turns (README, third session).
Usage: python results/bench/spr-amx/negative/kernel_choice_ab.py 0.9 measure,sparse,dense"""
import sys, time, numpy as np
from workbench.bench.models import distilbert
from workbench.recipes.prune.magnitude import magnitude_prune_
from workbench.runtime import compile_model
sp = float(sys.argv[1])
model = distilbert(); magnitude_prune_(model, sp, block=(1, 4))
engs = {m: compile_model(model, quantize=True, kernel_choice=m) for m in sys.argv[2].split(",")}
for m, e in engs.items(): print(m, e.describe()["kernels_per_layer"])
rng = np.random.default_rng(0); mask = np.ones((1, 128), np.int64)
res = {m: [] for m in engs}
for rnd in range(12):
    for m in (list(engs) if rnd % 2 else list(engs)[::-1]):
        e = engs[m]
        for _ in range(5): e(rng.integers(1000, 20000, (1, 128)), mask)
        ts = []
        for _ in range(25):
            ids = rng.integers(1000, 20000, (1, 128))
            t = time.perf_counter(); e(ids, mask); ts.append(time.perf_counter() - t)
        res[m].append(np.median(ts) * 1e3)
base = np.array(res[list(engs)[0]])
for m, v in res.items(): print(f"{m}: median {np.median(v):.3f} ms; vs {list(engs)[0]} per round median {np.median(base / np.array(v)):.3f}x")
