"""90 %-sparse MiniLM and DistilBERT, batch 1, 2 threads: plain vs pair-bounded weights, forwards timed
alternately in one process (median of 20 rounds x 5). `python results/bench/avx2-zen3-pb/sparse_ab.py`."""
import time, copy, numpy as np, torch
from workbench.bench.models import prune, minilm, distilbert
from workbench.runtime import compile_model
torch.set_num_threads(2)
for name, mk in (("minilm", minilm), ("distilbert", distilbert)):
    m = prune(mk().eval(), 0.9)
    ids = np.random.default_rng(0).integers(1000, 2000, (1, 128)); mask = np.ones_like(ids)
    E = {w: compile_model(m, int8_weights=w, kernel_choice="measure", choice_shape=(1, 128)) for w in ("per_channel", "pair_bounded")}
    for e in E.values():
        for _ in range(5): e(ids, mask)
    t = {w: [] for w in E}
    for r in range(20):
        for w, e in E.items():
            s = time.perf_counter()
            for _ in range(5): e(ids, mask)
            t[w].append((time.perf_counter() - s) / 5)
    med = {w: np.median(v) * 1e3 for w, v in t.items()}
    print(name, {w: f"{x:.2f} ms" for w, x in med.items()}, f"pc/pb {med['per_channel'] / med['pair_bounded']:.2f}x",
          {w: e.describe()["kernels_per_layer"] for w, e in E.items()})
