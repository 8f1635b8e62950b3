"""The far placement, one Linear at a time: each of the 90 %-sparse engine's layer-0 Linears
(its own BlockSparseInt8Linear objects, 128 rows, 2 threads) on a fixed input, so nothing it
reads was just written by the other core: in the kernel's own order (rows outermost) and columns
outermost (`_forward_in_order(x, 1)`), and, for reference, the dense engine's same Linears.
Each round: the round trip, then every cell for 0.25 s (medians), the cells in turns.
If a layer alone slows in far rounds, the cost is in the layer (its weights, its
synchronisation), not in data handed over between ops.
Usage: python layer.py [ROUNDS]"""
import os, sys
os.environ.setdefault("OMP_NUM_THREADS", "2")
import numpy as np
from workbench.bench.in_process import bench_engine
from timing import far_mask, median_ms
from workbench.bench.placement import round_trip_ns

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
rng = np.random.default_rng(0)
cells = {}
for eng_name, tag in (("wb-int8-sp90", "sp90"), ("wb-int8", "dense")):
    e, _ = bench_engine(eng_name, 1)
    for role in ("qkv", "out", "ffn1", "ffn2"):
        lin = e.engine._linears[f"layers.0.{role}"]
        x = rng.standard_normal((128, lin.K if hasattr(lin, "K") else lin.Kp)).astype(np.float32)
        cells[f"{tag} {role} own"] = (lambda lin=lin, x=x: lin._forward_in_order(x, 0, 2))
        if tag == "sp90":
            cells[f"{tag} {role} cols"] = (lambda lin=lin, x=x: lin._forward_in_order(x, 1, 2))
rows = []
names = list(cells)
for r in range(rounds):
    row = {"trip": round_trip_ns()}
    order = names if r % 2 == 0 else names[::-1]
    for n in order:
        row[n] = median_ms(lambda: cells[n](), 0.25)
    rows.append(row)
    print(f"round {r:2d} trip {row['trip']:4.0f} ns  " + "  ".join(f"{n} {row[n]:.4f}" for n in names), flush=True)
trips = np.array([x["trip"] for x in rows])
far = far_mask(trips)
if far.any() and (~far).any():
    print(f"ms per call, {(~far).sum()} near / {far.sum()} far rounds (medians), far / near")
    for n in names:
        v = np.array([x[n] for x in rows])
        a, b = np.median(v[~far]), np.median(v[far])
        print(f"  {n:16s} {a:7.4f} {b:7.4f} {b / a:6.3f}x")
else:
    print(f"one placement only: {far.sum()} far rounds of {len(rows)}")
