"""A/B of experiment switches on the compiled batch-1 forward, split by placement: each round
measures the round trip between the vCPUs, then times each engine under each variant (0.4 s
each, medians; variants in turns, reversed every other round). Every variant must give the
default's outputs (checked before timing).
  default     the kernels as shipped
  qkv-rows    `encoder._set_qkv_by_heads(0)`: the fused QKV's items rows outermost at batch 1,
              so each thread multiplies only the activations it quantized and packed itself
              (attention then reads the other thread's Q, K, V rows)
  x-warm      `int8._set_sparse_x_warm(1)`: the sparse VNNI kernel prefetches, once per call and
              thread, every packed activation tile the thread's items read, before the first
Usage: python variants.py ROUNDS VARIANT[,VARIANT...] [ENGINE ...]"""
import os, sys
os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
from workbench.bench.in_process import bench_engine
from timing import far_mask, median_ms
from workbench.bench.placement import round_trip_ns
from workbench_ext import encoder, int8


def setter(name):
    def apply():
        encoder._set_qkv_by_heads(name != "qkv-rows")
        if hasattr(int8, "_set_sparse_x_warm"):
            int8._set_sparse_x_warm(1 if name == "x-warm" else 0)
    return apply


rounds = int(sys.argv[1])
variants = sys.argv[2].split(",")
names = sys.argv[3:] or ["wb-int8", "wb-int8-sp70", "wb-int8-sp90"]
eng = {n: bench_engine(n, 1) for n in names}
for n, (e, feed) in eng.items():
    setter("default")(); ref = np.asarray(e.run(feed))
    for v in variants:
        setter(v)(); assert np.array_equal(np.asarray(e.run(feed)), ref), (n, v)
rows = []
for r in range(rounds):
    row = {"trip": round_trip_ns()}
    for n, (e, feed) in eng.items():
        for v in (variants if r % 2 == 0 else variants[::-1]):
            setter(v)()
            row[n, v] = median_ms(lambda: e.run(feed))
    setter("default")()
    rows.append(row)
    print(f"round {r:2d} trip {row['trip']:4.0f} ns  " + "  ".join(
        f"{n} " + "/".join(f"{row[n, v]:.3f}" for v in variants) for n in names), flush=True)
trips = np.array([x["trip"] for x in rows])
far = far_mask(trips)
print(f"ms per forward (medians) and speed-up over {variants[0]} (median of per-round ratios)")
for label, sel in (("near", ~far), ("far", far)):
    if not sel.any():
        print(f"{label}: no rounds"); continue
    print(f"{label} ({sel.sum()} rounds):")
    for n in names:
        base = np.array([x[n, variants[0]] for x in rows])[sel]
        cells = []
        for v in variants:
            t = np.array([x[n, v] for x in rows])[sel]
            q = base / t
            cells.append(f"{v} {np.median(t):.3f} ms ({np.median(q):.3f}x, {q.min():.2f}-{q.max():.2f})")
        print(f"  {n}: " + "; ".join(cells))
