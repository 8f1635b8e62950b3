"""Token dropping and early exits on our runtime: the packed, compiled per-layer loop against the
padded per-op loop that ran them before, on the dynamic study's trained model.

    python results/bench/zen4-dynamic/dynamic_ab.py --run results/dynamic/run/seed-0
        [--batches 1,32] [--threads 2] [--rounds 5]

`--run`: one seed run of `recipes/dynamic.yaml` (its `lat` model: length-adaptive, exits after
layers 1 and 2; and its length searches). The operating points are the study's
(`workbench.dynamic.measure.operating_points`, chosen on validation): full length, the searched
length configurations, entropy exits, every example leaving after layer 1. The whole test split,
in its order: at batch 1 each sentence at its own length (no padding), at larger batches
tokenized per batch and padded to the batch's longest sentence, as an evaluation loop does.
Engines, one compiled int8 engine object:
- `packed` (the default now): each layer on the kept tokens' rows only, one compiled call per
  layer (`Int8Encoder.run_layers`); full length: the whole encoder in one call;
- `padded`: `Engine.pack_sequences = False`, the loop dynamic points ran on before: each layer op
  by op (`Engine._layer`) on B x (largest kept count) rows.
Per batch size and point, in one process, the two take turns over the rounds (each turn a 0.1 s
pause, one untimed batch, then the whole split timed). Printed: sentences/s (median), packed over
padded in the same round (median, min-max), test accuracy of both, and at batch 1 whether their
logits are bitwise equal (they should be: the same kernels, the same rows).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import workbench  # noqa: F401  (first: the short OpenMP spin for torch's threads)
import numpy as np
import torch

PAUSE_S = 0.1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, type=Path, help="a seed run of recipes/dynamic.yaml")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from workbench.bench.in_process import time_in_turns
    from workbench.data.tasks import load_task
    from workbench.dynamic.measure import _searched, operating_points
    from workbench.models.arch import architecture
    from workbench.models.dynamic import model_spec
    from workbench.models.edits import load_edited_model
    from workbench.pipeline.spec import PipelineSpec
    from workbench.runtime import compile_model
    from workbench_ext import cpu

    cpu.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    model_dir = args.run / "artifacts" / "lat" / "model"
    lat = load_edited_model(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    spec = PipelineSpec.from_yaml(args.run / "recipe.yaml")
    test = load_task(spec.task, seed=spec.seed).splits["test"]
    texts, labels = list(test["text"]), np.asarray(test["label"])
    engine = compile_model(lat, quantize=True)
    exits = model_spec(lat).exit_layers
    points = [p for p in operating_points(_searched(args.run), architecture(lat, "lat").num_layers, exits)
              if p["kind"] != "exit" or p["threshold"] in (0.3, 0.5, 0.7)]
    points = [p for p in points if p.get("exit_at") in (None, exits[0])]
    lengths = [len(t) for t in tok(texts, truncation=True, max_length=128)["input_ids"]]
    print(f"model: {model_dir} ({engine.num_layers} layers, exits after {[e + 1 for e in exits]}); "
          f"layer loop: {engine.describe()['layer_loop'].split(':')[0]}")
    print(f"task {getattr(spec.task, 'name', spec.task)} test split: {len(texts)} sentences, tokens median {int(np.median(lengths))}, "
          f"max {max(lengths)}; {args.threads} threads, {args.rounds} rounds; ISA {cpu.active_isa()}")

    def run(pack: bool, over: dict):
        def call(b):
            engine.pack_sequences = pack
            return engine(b["input_ids"], b["attention_mask"], **over)
        return call

    for size in (int(x) for x in args.batches.split(",")):
        bs = []
        for i in range(0, len(texts), size):
            enc = tok(texts[i:i + size], padding=True, truncation=True, max_length=128, return_tensors="np")
            bs.append({"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)})
        print(f"\nbatch {size}:")
        print(f"{'point':<26} {'layers':>6} {'packed/s':>9} {'padded/s':>9} {'packed/padded':>14} {'min-max':>11} "
              f"{'acc packed':>10} {'acc padded':>10} {'bitwise':>7}")
        for p in points:
            over = {"length_ratios": p["ratios"], "exit_threshold": p["threshold"], "exit_at": p.get("exit_at")}
            runners = {"packed": run(True, over), "padded": run(False, over)}
            logits = {n: np.concatenate([r(b) for b in bs]) for n, r in runners.items()}
            layers = []
            for b in bs:
                runners["packed"](b)
                layers += engine.last_trace.layers_run.tolist()
            acc = {n: float((lg.argmax(-1) == labels).mean()) for n, lg in logits.items()}
            same = np.array_equal(logits["packed"], logits["padded"])
            times = time_in_turns(runners, bs, args.rounds, PAUSE_S)
            ratio = [q / p_ for p_, q in zip(times["packed"], times["padded"])]
            rate = {n: len(texts) / statistics.median(t) for n, t in times.items()}
            print(f"{p['point']:<26} {np.mean(layers):6.2f} {rate['packed']:9.1f} {rate['padded']:9.1f} "
                  f"{statistics.median(ratio):13.2f}x {min(ratio):5.2f}-{max(ratio):.2f}x "
                  f"{acc['packed']:10.4f} {acc['padded']:10.4f} {str(same):>7}", flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
