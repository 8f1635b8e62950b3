"""Per seed: the teacher of results/<precision>_attention compiled int8 / fp32 weights with fp32 and <precision>
attention (bf16, the default, or int8), on the test split: accuracy, agreement of the argmax and |delta logit| between
the two attentions. `python results/bf16_attention/agreement.py [bf16|int8] [long]` after
`workbench run recipes/<precision>_attention.yaml --seeds 0,1,2` (the teachers are in the ignored artifacts/
folders); output: results/<precision>_attention/agreement.txt. With `long`: recipes/int8_attention_long.yaml's
teachers (BBC News, 512 tokens), output results/<precision>_attention_long/agreement.txt."""
import sys

import numpy as np, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from workbench.data.tasks import load_task
from workbench.runtime import compile_model
torch.set_num_threads(2)
prec = sys.argv[1] if len(sys.argv) > 1 else "bf16"
long = sys.argv[2:] == ["long"]
task_name, max_length, folder = ("bbc-news", 512, f"{prec}_attention_long") if long else ("rt-sentiment", 128, f"{prec}_attention")
for seed in (0, 1, 2):
    d = f"results/{folder}/seed-{seed}/artifacts/teacher/model"
    model = AutoModelForSequenceClassification.from_pretrained(d).eval()
    tok = AutoTokenizer.from_pretrained(d)
    task = load_task(task_name, seed=0)  # the runs split at the recipe seed; --seeds varies training
    test = task.splits["test"]
    y = np.array(test["label"])
    for quant in (True, False):
        e32, ep = compile_model(model, quantize=quant), compile_model(model, quantize=quant, attention=prec)
        l32, lp = [], []
        for i in range(0, len(test), 32):
            enc = tok(test["text"][i:i + 32], padding=True, truncation=True, max_length=max_length, return_tensors="np")
            l32.append(e32(enc["input_ids"], enc["attention_mask"])); lp.append(ep(enc["input_ids"], enc["attention_mask"]))
        l32, lp = np.concatenate(l32), np.concatenate(lp)
        print(f"seed {seed} {'int8' if quant else 'fp32'} weights: acc fp32-attn {np.mean(l32.argmax(1) == y):.4f} "
              f"{prec}-attn {np.mean(lp.argmax(1) == y):.4f}; same argmax {np.mean(l32.argmax(1) == lp.argmax(1)) * 100:.2f}% "
              f"({np.sum(l32.argmax(1) != lp.argmax(1))} of {len(y)} differ); max|dlogit| {np.abs(l32 - lp).max():.4f}, "
              f"median {np.median(np.abs(l32 - lp)):.5f}; max|logit| {np.abs(l32).max():.2f}")
