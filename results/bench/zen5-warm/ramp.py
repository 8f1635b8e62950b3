"""The k-th call after a 0.1 s pause, per engine (DistilBERT-base, 2 threads, batch 1, sequence 128),
in one process, 12 rounds: how long after a pause an engine takes to reach its back-to-back speed.
Usage: python results/bench/zen5-warm/ramp.py
"""
import os, sys, time, tempfile
os.environ["OMP_NUM_THREADS"]="2"
import torch, numpy as np
torch.set_num_threads(2)
from pathlib import Path
from workbench.bench.engines import ENGINES
from workbench.bench.models import distilbert, prune
batch=1
ids = torch.from_numpy(np.random.default_rng(0).integers(1000, 20000, size=(batch, 128)))
inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
engs={}
for name in ("ort-int8-plain-pt","wb-int8","wb-int8-sp90"):
    eng, model = ENGINES[name](), distilbert()
    if eng.sparsity: prune(model, eng.sparsity, eng.block)
    eng.shape, eng.batches = (batch, 128), (batch,)
    eng.setup(model, 2, Path(tempfile.mkdtemp()), "distilbert")
    f = eng.feed(inputs)
    for _ in range(3): eng.run(f)
    engs[name]=(eng,f)
K=12
res={n:[] for n in engs}
for r in range(12):
    for n,(eng,f) in engs.items():
        time.sleep(0.1)
        ts=[]
        for k in range(K):
            t=time.perf_counter(); eng.run(f); ts.append(time.perf_counter()-t)
        res[n].append(ts)
for n,v in res.items():
    v=np.median(np.array(v),axis=0)*1e3
    print(f"{n:20s} call after pause 1..{K} (median ms): "+" ".join(f"{x:.2f}" for x in v))
