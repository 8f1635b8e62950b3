"""The fused attention kernel alone, 12 heads x 128 x 64 (q scaled by 1/sqrt(d)), at each precision
named (e.g. `fp32,bf16,bf16x3`; bf16x3 needs bf16x3_attention.patch applied and the kernels rebuilt):
the largest |out - fp32 out| / max |fp32 out|, then min and median of 200 calls on 1 and 2 threads,
the precisions taking turns. Usage: python results/bench/spr-amx/negative/bf16x3-attention/attention_kernel.py fp32,bf16,bf16x3"""
import time, sys, numpy as np
from workbench_ext.attention import attention
rng = np.random.default_rng(0)
B, nh, S, d = 1, 12, 128, 64
qkv = rng.standard_normal((B * S, 3 * nh * d)).astype(np.float32); qkv[:, :nh * d] *= d ** -0.5
v3 = qkv.reshape(B, S, 3, nh, d)
q = v3[:, :, 0].transpose(0, 2, 1, 3); k = v3[:, :, 1].transpose(0, 2, 3, 1); v = v3[:, :, 2].transpose(0, 2, 1, 3)
m = np.zeros((B, S), np.float32)
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
