"""The fused attention kernel alone at DistilBERT-base shape (batch 1, 12 heads, 128 tokens, head_dim 64; with `32`:
MiniLM's head_dim 32): fp32, bf16 and int8 operands taking turns, 1 and 2 threads: median microseconds per call (one
layer's attention).
`python attention_kernel.py [32]`; output: attention-kernel.txt (fp32 and bf16 only, 2026-12-03), ../zen4-int8attn/attention-kernel.txt
(2026-12-05, with int8)."""
import sys
import time

import numpy as np

from workbench_ext import attention as A

rng = np.random.default_rng(0)
d = int(sys.argv[1]) if len(sys.argv) > 1 else 64
qkv = rng.standard_normal((1, 128, 3, 12, d)).astype(np.float32)
q = np.ascontiguousarray(qkv[:, :, 0].transpose(0, 2, 1, 3)) * np.float32(d ** -0.5)
k, v = qkv[:, :, 1].transpose(0, 2, 3, 1), qkv[:, :, 2].transpose(0, 2, 1, 3)
mask = np.zeros((1, 128), np.float32)
print("head_dim", d, "| bf16 path:", A.bf16_path(), "| int8 runs:", A.int8_runs())
for nt in (1, 2):
    times = {"fp32": [], "bf16": [], "int8": []}
    for _ in range(400):
        for prec in times:
            t = time.perf_counter()
            A.attention(q, k, v, mask, nt, precision=prec)
            times[prec].append(time.perf_counter() - t)
    med = {p: float(np.median(ts)) * 1e6 for p, ts in times.items()}
    print(f"threads {nt}: fp32 {med['fp32']:.0f} us, bf16 {med['bf16']:.0f} us ({med['fp32'] / med['bf16']:.2f}x), "
          f"int8 {med['int8']:.0f} us ({med['fp32'] / med['int8']:.2f}x fp32, {med['bf16'] / med['int8']:.2f}x bf16)")
