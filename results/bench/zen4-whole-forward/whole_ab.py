"""The whole static forward in one compiled call, and the compiled input checks, against the encoder
call between Python's embeddings and head with NumPy checks (every static forward until
2026-12-06), in one process, taking turns.

    python results/bench/zen4-whole-forward/whole_ab.py [--demo results/demo] [--threads 2] [--rounds 7]

Models:
- `demo`: the demo's runtime stage as the demo builds it (its `pruned` student, 4 layers,
  1x4-block pruned, compiled int8 with `kernel_choice="measure"` at (1, 128)), on the test split of
  its task (1006 Rotten Tomatoes sentences): at batch 1 each sentence at its own length, at batch
  32 tokenized per batch and padded to the batch's longest (packed by the engine); and at the
  demo's speed shape, 128 tokens, batch 1 and 8 (`latency_ms_b1` / `_b8` in its metrics).
- `distilbert`, `distilbert-sp90`: the bench's DistilBERT-base shape (random weights, seed 0; and
  90 % pruned in 1x4 blocks), 128 tokens, batch 1: the runtime issue's row.
Engines, one compiled engine object per model:
- `whole`: `Int8Encoder.classify`, token ids to logits in one call (the default now);
- `between`: the same encoder's `run` / `run_packed` between `Engine._embed` and `Engine._head`;
- `before`: `between` with the input checks in NumPy (`inputs._scan` off): the static forward as
  it ran before 2026-12-06.
Printed per model and batch: samples/s (median over the rounds), whole's speed over the others'
in the same round (median, min-max), and whether all logits are bitwise equal (they should be).
"""
from __future__ import annotations

import argparse
import copy
import statistics
from pathlib import Path

import workbench  # noqa: F401  (first: the short OpenMP spin for torch's threads)
import numpy as np
import torch

PAUSE_S = 0.1


class _LayersOnly:
    """The encoder without its ends: the engine then runs embeddings and head in Python."""

    classifies = False

    def __init__(self, encoder):
        self.run, self.run_packed = encoder.run, encoder.run_packed


def _compare(name: str, engine, batches: list[dict], rounds: int) -> None:
    from workbench.bench.in_process import time_in_turns

    from workbench.runtime import inputs

    encoder, layers_only, scan = engine._encoder, _LayersOnly(engine._encoder), inputs._scan

    def runner(enc, compiled_checks: bool):
        def call(b):
            engine._encoder = enc
            inputs._scan = scan if compiled_checks else (lambda *a: None)
            return engine(b["input_ids"], b["attention_mask"])
        return call

    runners = {"whole": runner(encoder, True), "between": runner(layers_only, True),
               "before": runner(layers_only, False)}
    logits = {n: np.concatenate([r(b) for b in batches]) for n, r in runners.items()}
    same = all(np.array_equal(logits["whole"], lg) for lg in logits.values())
    times = time_in_turns(runners, batches, rounds, PAUSE_S)
    engine._encoder, inputs._scan = encoder, scan
    n = sum(len(b["input_ids"]) for b in batches)
    rate = {k: n / statistics.median(t) for k, t in times.items()}
    cells = []
    for other in ("between", "before"):
        ratio = [o / w for w, o in zip(times["whole"], times[other])]
        cells.append(f"{statistics.median(ratio):6.3f}x ({min(ratio):.2f}-{max(ratio):.2f})")
    print(f"{name:<34} {rate['whole']:8.1f} {rate['between']:8.1f} {rate['before']:8.1f}   {cells[0]:>20} "
          f"{cells[1]:>20} {str(same):>7}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, default=Path("results/demo"), help="a finished `make demo` run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from workbench.bench.models import distilbert, prune
    from workbench.data.tasks import load_task
    from workbench.pipeline.spec import PipelineSpec
    from workbench.runtime import compile_model
    from workbench_ext import cpu

    cpu.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"ISA {cpu.active_isa()}, {args.threads} threads, {args.rounds} rounds; samples/s of each engine (median); "
          "whole's speed over between's and before's in the same round: median (min-max); logits bitwise equal")
    print(f"{'model, batch':<34} {'whole/s':>8} {'betw./s':>8} {'before/s':>8}   {'whole / between':>20} "
          f"{'whole / before':>20} {'bitwise':>7}")

    model_dir = args.demo / "artifacts" / "pruned" / "model"
    demo = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    engine = compile_model(demo, quantize=True, kernel_choice="measure", choice_shape=(1, 128))
    tok = AutoTokenizer.from_pretrained(model_dir)
    spec = PipelineSpec.from_yaml(args.demo / "recipe.yaml")
    texts = list(load_task(spec.task, seed=spec.seed).splits["test"]["text"])
    for size in (1, 32):
        batches = []
        for i in range(0, len(texts), size):
            enc = tok(texts[i:i + size], padding=True, truncation=True, max_length=128, return_tensors="np")
            batches.append({k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")})
        _compare(f"demo, test split, batch {size}", engine, batches, args.rounds)
    rng = np.random.default_rng(0)
    for size in (1, 8):
        ids = rng.integers(1000, 20000, (size, 128))
        batches = [{"input_ids": ids, "attention_mask": np.ones_like(ids)}] * max(1, 64 // size)
        _compare(f"demo, 128 tokens, batch {size}", engine, batches, args.rounds)

    base = distilbert()
    ids = rng.integers(1000, 20000, (1, 128))
    batches = [{"input_ids": ids, "attention_mask": np.ones_like(ids)}] * 10
    for name, model in (("distilbert", base), ("distilbert-sp90", prune(copy.deepcopy(base), 0.9))):
        engine = compile_model(model, quantize=True, kernel_choice="measure", choice_shape=(1, 128))
        _compare(f"{name}, 128 tokens, batch 1", engine, batches, args.rounds)


if __name__ == "__main__":
    main()
