"""The fused attention kernel alone, 12 heads x 128 x 64 (q scaled by 1/sqrt(d); ../attention_time.py's inputs), at
each precision named (e.g. `fp32,bf16,bf16x3`; bf16x3 needs bf16x3_attention.patch applied and the kernels rebuilt):
the largest |out - fp32 out| / max |fp32 out|, then min and median of 200 calls on 1 and 2 threads, the precisions
taking turns. Usage: python results/bench/spr-amx/negative/bf16x3-attention/attention_kernel.py fp32,bf16,bf16x3"""
import os, sys, time, numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from attention_time import inputs
from workbench_ext.attention import attention

q, k, v, m = inputs()
precs = sys.argv[1].split(",")
ref = attention(q, k, v, m, num_threads=1, precision="fp32")
for p in precs:
    o = attention(q, k, v, m, num_threads=1, precision=p)
    print(p, "max rel err vs fp32", float(np.abs(o - ref).max() / np.abs(ref).max()))
for nt in (1, 2):
    res = {p: [] for p in precs}
    for _ in range(20):
        for p in precs: attention(q, k, v, m, num_threads=nt, precision=p)
    for _ in range(200):
        for p in precs:
            t = time.perf_counter(); attention(q, k, v, m, num_threads=nt, precision=p); res[p].append(time.perf_counter() - t)
    print(f"t{nt}", " | ".join(f"{p} min {min(ts)*1e6:.0f} p50 {np.median(ts)*1e6:.0f}" for p, ts in res.items()))
