"""The demo's own pruned student (`make demo`: results/demo/artifacts/pruned/model) compiled as its runtime stage
does (`quantize=True, sparse_threshold=0.5`, kernels measured once: the three engines share the same kernels per
layer, and differ only in the attention), with fp32, bf16 and int8 attention: test accuracy
on all rt-sentiment test sentences, and batch-1 forwards at sequence length 128 timed in turns (each turn: 0.1 s
pause, one untimed call, then 10 timed calls; 15 rounds; medians), 2 threads.
`python results/bench/zen4-int8attn/demo_student.py [MODEL_DIR]`; output: demo-student.txt."""
import sys
import time

import workbench  # noqa: F401  (first: sets the OpenMP defaults before torch loads)
import numpy as np
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from workbench.data.tasks import load_task
from workbench.runtime import Engine, compile_model

model_dir = sys.argv[1] if len(sys.argv) > 1 else "results/demo/artifacts/pruned/model"
model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
tok = AutoTokenizer.from_pretrained(model_dir)
test = load_task("rt-sentiment", seed=0).splits["test"]
y = np.array(test["label"])
base = compile_model(model, quantize=True, sparse_threshold=0.5, kernel_choice="measure")
engines = {a: Engine({**base.meta, "attention": a}, base.tensors) for a in ("fp32", "bf16", "int8")}
logits = {}
for a, eng in engines.items():
    out = []
    for i in range(0, len(test), 32):
        enc = tok(test["text"][i:i + 32], padding=True, truncation=True, max_length=128, return_tensors="np")
        out.append(eng(enc["input_ids"], enc["attention_mask"]))
    logits[a] = np.concatenate(out)
    print(f"{a} attention ({eng.describe()['attention']}): test accuracy {np.mean(logits[a].argmax(1) == y):.4f}"
          + ("" if a == "fp32" else f"; {np.sum(logits[a].argmax(1) != logits['fp32'].argmax(1))} of {len(y)} "
             f"predictions differ from fp32 attention, max|dlogit| {np.abs(logits[a] - logits['fp32']).max():.4f}"))
ids = np.full((1, 128), 1000, np.int64)
ids[0, 0] = 101
mask = np.ones((1, 128), np.int64)
times = {a: [] for a in engines}
for _ in range(15):
    for a, eng in engines.items():
        time.sleep(0.1)
        eng(ids, mask)
        t = time.perf_counter()
        for _ in range(10):
            eng(ids, mask)
        times[a].append((time.perf_counter() - t) / 10)
med = {a: float(np.median(t)) * 1e3 for a, t in times.items()}
print("batch-1 forward, 2 threads, medians: " + ", ".join(
    f"{a} attention {m:.2f} ms ({med['fp32'] / m:.2f}x)" for a, m in med.items()))
