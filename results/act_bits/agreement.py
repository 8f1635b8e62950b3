"""Per seed: the teacher of results/act_bits/run compiled as fp32, int8 with 8-bit activations (plain
per-channel weights, and pair-bounded ones) and int8 with 7-bit activations, on the test split: accuracy, agreement of the argmax with the fp32 engine, and |logit - fp32 logit|.
`python results/act_bits/agreement.py` after `workbench run recipes/act_bits.yaml --seeds 0,1,2 --results
results/act_bits --name run` (the teachers are in the ignored artifacts/ folders); output: agreement.txt."""
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from workbench.data.tasks import load_task
from workbench.results import atomic_write_text
from workbench.runtime import compile_model

torch.set_num_threads(2)
lines = []
for seed in (0, 1, 2):
    d = f"results/act_bits/run/seed-{seed}/artifacts/teacher/model"
    model = AutoModelForSequenceClassification.from_pretrained(d).eval()
    tok = AutoTokenizer.from_pretrained(d)
    test = load_task("rt-sentiment", seed=0).splits["test"]  # the runs split at the recipe seed
    y = np.array(test["label"])
    engines = {"fp32": compile_model(model, quantize=False),
               "int8-a8": compile_model(model, int8_weights="per_channel"),
               "int8-pb": compile_model(model, int8_weights="pair_bounded"),
               "int8-a7": compile_model(model, act_bits=7)}
    logits = {k: [] for k in engines}
    for i in range(0, len(test), 32):
        enc = tok(test["text"][i:i + 32], padding=True, truncation=True, max_length=128, return_tensors="np")
        for k, e in engines.items():
            logits[k].append(e(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")))
    logits = {k: np.concatenate(v) for k, v in logits.items()}
    ref = logits["fp32"]
    for k in ("int8-a8", "int8-pb", "int8-a7"):
        d_ = np.abs(logits[k] - ref)
        same = logits[k].argmax(1) == ref.argmax(1)
        lines.append(f"seed {seed} {k}: acc {np.mean(logits[k].argmax(1) == y):.4f} (fp32 {np.mean(ref.argmax(1) == y):.4f}); "
                     f"same argmax as fp32 {np.mean(same) * 100:.2f}% ({np.sum(~same)} of {len(y)} differ); "
                     f"|logit - fp32| max {d_.max():.4f}, median {np.median(d_):.5f}, rms {np.sqrt(np.mean(d_ ** 2)):.5f}; "
                     f"max|logit| {np.abs(ref).max():.2f}")
        print(lines[-1], flush=True)
atomic_write_text(Path("results/act_bits/agreement.txt"), "\n".join(lines) + "\n")
