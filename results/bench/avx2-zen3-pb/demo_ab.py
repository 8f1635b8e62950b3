# python results/bench/avx2-zen3-pb/demo_ab.py results/demo/artifacts/pruned/model  (after `workbench run recipes/demo.yaml`)
"""The demo's runtime stage on this machine: the pruned student compiled as the stage compiles it
(kernel_choice measure at (1, 128)), with plain per-channel and with pair-bounded int8 weights;
test accuracy, and batch-1 forwards timed alternately in one process (median of 15 rounds x 5)."""
import sys, time
import numpy as np, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from workbench.data.tasks import load_task
from workbench.runtime import compile_model
torch.set_num_threads(2)
d = sys.argv[1]
model = AutoModelForSequenceClassification.from_pretrained(d).eval()
tok = AutoTokenizer.from_pretrained(d)
test = load_task("rt-sentiment", seed=0).splits["test"]
y = np.array(test["label"])
E = {w: compile_model(model, int8_weights=w, kernel_choice="measure") for w in ("per_channel", "pair_bounded")}
for w, e in E.items():
    print(w, e.describe()["kernels_per_layer"])
logits = {w: [] for w in E}
for i in range(0, len(test), 32):
    enc = tok(test["text"][i:i + 32], padding=True, truncation=True, max_length=128, return_tensors="np")
    for w, e in E.items():
        logits[w].append(e(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")))
L = {w: np.concatenate(v) for w, v in logits.items()}
for w in E:
    print(f"{w}: test accuracy {np.mean(L[w].argmax(1) == y):.4f}")
print("predictions that differ:", int(np.sum(L["per_channel"].argmax(1) != L["pair_bounded"].argmax(1))), "of", len(y))
enc = tok(["x " * 200], truncation=True, max_length=128, return_tensors="np")
ids, mask = enc["input_ids"], enc["attention_mask"]
for e in E.values():
    for _ in range(5): e(ids, mask)
t = {w: [] for w in E}
for r in range(15):
    for w, e in E.items():
        s = time.perf_counter()
        for _ in range(5): e(ids, mask)
        t[w].append((time.perf_counter() - s) / 5)
med = {w: np.median(v) * 1e3 for w, v in t.items()}
print({w: f"{m:.2f} ms" for w, m in med.items()}, f"ratio {med['per_channel'] / med['pair_bounded']:.2f}x")
per_round = np.array(t["per_channel"]) / np.array(t["pair_bounded"])
print(f"per-round ratio min-max {per_round.min():.2f}-{per_round.max():.2f}")
