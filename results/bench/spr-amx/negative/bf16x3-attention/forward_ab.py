"""Whole DistilBERT forwards at batch 1, 128 tokens, 2 threads: one compiled engine (dense, 90 % in 1x4
blocks, 90 % in 16x64 tiles), its compiled encoder built twice, with fp32 and with bf16x3 attention
(bf16x3_attention.patch applied), taking turns for 30 rounds of 5 forwards; the median of the per-round
ratios, and the largest logit difference between the two. Run from the repository root."""
import sys, time, numpy as np
sys.path.insert(0, "results/bench/emr-amx")
from forward_breakdown import _engine
rng = np.random.default_rng(0)
ids = rng.integers(1000, 20000, (1, 128)).astype(np.int64); mask = np.ones_like(ids)
for name, sp, blk in (("dense", 0, (1, 4)), ("sp90", 0.9, (1, 4)), ("tile90", 0.9, (16, 64))):
    eng = _engine(sp, blk)
    encs = {}
    for p in ("fp32", "bf16x3"):
        eng.attention = p; encs[p] = eng._compiled_encoder()
    eng.attention = "fp32"
    outs = {}
    for p in encs:
        eng._encoder = encs[p]; outs[p] = eng(ids, mask)
    t = {p: [] for p in encs}
    for r in range(30):
        for p in encs:
            eng._encoder = encs[p]
            for _ in range(3): eng(ids, mask)
            t0 = time.perf_counter()
            for _ in range(5): eng(ids, mask)
            t[p].append((time.perf_counter() - t0) / 5)
    med = {p: np.median(v) * 1e3 for p, v in t.items()}
    ratio = np.median(np.array(t["fp32"]) / np.array(t["bf16x3"]))
    print(f"{name}: fp32 {med['fp32']:.2f} ms, bf16x3 {med['bf16x3']:.2f} ms, per-round ratio {ratio:.3f}, max |dlogit| {np.abs(outs['fp32'] - outs['bf16x3']).max():.2e}", flush=True)
