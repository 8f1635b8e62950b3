"""Padded batches of real sentences, run with and without their padding, beside ONNX Runtime int8.

    python results/bench/zen4-packed/packed_ab.py [--model results/demo/artifacts/pruned/model]
        [--task rt-sentiment] [--batches 8,32,64] [--threads 2] [--rounds 7] [--weights fp32 --no-ort]

`--model`: a saved model folder (the demo's pruned student after `make demo`, the default), or
one of the bench's models with MiniLM's tokenizer (BERT's uncased WordPiece vocabulary): `minilm`
(the real weights, a seeded head) or `distilbert` (DistilBERT-base's shape, seeded random weights:
for speed only, its accuracy is chance). The task's whole test split, in
its order, is cut into batches and tokenized per batch as an evaluation loop does it (padding to
the batch's longest sentence, truncation at 128 tokens). Per batch size, in one process, the
engines take turns over the rounds, each turn a 0.1 s pause, one untimed batch, then the whole
split timed:
- `wb packed`: our engine as the workbench_runtime stage compiles it (`Engine.pack_sequences`
  on, the default: the batch's tokens without the padding);
- `wb padded`: the same engine object with `pack_sequences` off (the batch as given, masked);
- `ort-int8 <variant>`: ONNX Runtime dynamic int8 of the same model, each of `workbench bench`'s
  four variants; the best median per batch size is the peer, as in the bench.
Printed: per engine the median seconds per split, sentences/s, and the ratio to the peer in the
same round (median, min-max over the rounds); test accuracy of every engine; and whether the
packed logits of the first 64 sentences are bitwise those of each sentence run alone.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import workbench  # noqa: F401  (first: the short OpenMP spin for torch's threads)
import numpy as np
import torch

PAUSE_S = 0.1


def load(model_arg: str):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if model_arg in ("minilm", "distilbert"):   # the bench's models, MiniLM's (BERT uncased) tokenizer
        from workbench.bench import models
        from workbench.models.registry import resolve_model_path

        model = getattr(models, model_arg)().eval()
        tok = AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6")[0])
        assert tok.vocab_size <= model.config.vocab_size
        return model, tok, model_arg
    model = AutoModelForSequenceClassification.from_pretrained(model_arg).eval()
    path = Path(model_arg)
    label = path.parent.name if path.name == "model" else path.name   # a stage folder: its stage
    return model, AutoTokenizer.from_pretrained(model_arg), label


def batches(tok, texts: list[str], size: int) -> list[dict[str, np.ndarray]]:
    out = []
    for i in range(0, len(texts), size):
        enc = tok(texts[i:i + size], padding=True, truncation=True, max_length=128, return_tensors="np")
        out.append({"input_ids": enc["input_ids"].astype(np.int64),
                    "attention_mask": enc["attention_mask"].astype(np.int64)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="results/demo/artifacts/pruned/model")
    ap.add_argument("--task", default="rt-sentiment")
    ap.add_argument("--batches", default="8,32,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--weights", choices=("int8", "fp32"), default="int8",
                    help="fp32: our engine with fp32 weights (the per-op layer loop)")
    ap.add_argument("--no-ort", action="store_true", help="packed against padded only")
    args = ap.parse_args()

    from workbench.bench.in_process import time_in_turns
    from workbench.bench.ort_engines import ORT_INT8_VARIANTS, onnx_int8, ort_session
    from workbench.data.tasks import load_task
    from workbench.runtime import compile_model
    from workbench_ext import cpu

    cpu.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    model, tok, label = load(args.model)
    test = load_task(args.task).splits["test"]
    texts, labels = list(test["text"]), np.asarray(test["label"])
    engine = compile_model(model, quantize=args.weights == "int8", sparse_threshold=0.5, kernel_choice="measure")
    sessions = {}
    with tempfile.TemporaryDirectory() as cache:
        for variant, ort_args in ({} if args.no_ort else ORT_INT8_VARIANTS).items():
            path, _ = onnx_int8(model, Path(cache), label, *ort_args)
            sessions[variant] = ort_session(path, args.threads)

        def wb(pack: bool):
            def run(b):
                engine.pack_sequences = pack
                return engine(b["input_ids"], b["attention_mask"])
            return run

        runners = {"wb packed": wb(True), "wb padded": wb(False)}
        for variant, sess in sessions.items():
            runners[f"ort-int8 {variant}"] = lambda b, s=sess: s.run(None, b)[0]

        lengths = [len(t) for t in tok(texts, truncation=True, max_length=128)["input_ids"]]
        print(f"model {label} ({args.weights} weights, layer loop {engine.describe()['layer_loop'].split(':')[0]}); task {args.task} test split: {len(texts)} sentences, tokens per sentence "
              f"median {int(np.median(lengths))}, mean {np.mean(lengths):.1f}, max {max(lengths)}; "
              f"{args.threads} threads; kernels per layer {engine.describe()['kernels_per_layer']}")
        # the same bits alone and packed
        first = batches(tok, texts[:64], 64)[0]
        packed = wb(True)(first)
        alone = np.concatenate([wb(True)({k: v[i:i + 1, :int(first["attention_mask"][i].sum())]
                                          for k, v in first.items()}) for i in range(len(first["input_ids"]))])
        padded = wb(False)(first)
        print(f"first 64 sentences: packed logits bitwise equal to each sentence alone: "
              f"{np.array_equal(packed, alone)} (max |diff| {np.abs(packed - alone).max():.3g}); "
              f"padded vs alone max |diff| {np.abs(padded - alone).max():.3g}")
        for size in (int(x) for x in args.batches.split(",")):
            bs = batches(tok, texts, size)
            tokens = sum(int(b["attention_mask"].sum()) for b in bs)
            slots = sum(b["attention_mask"].size for b in bs)
            acc = {}
            for name, run in runners.items():
                pred = np.concatenate([np.asarray(run(b)).argmax(-1) for b in bs])
                acc[name] = float((pred == labels).mean())
            times = time_in_turns(runners, bs, args.rounds, PAUSE_S)
            names = list(runners)
            med = {n: statistics.median(t) for n, t in times.items()}
            peer = min((n for n in names if n.startswith("ort")), key=med.get, default="wb padded")
            print(f"\nbatch {size}: {len(bs)} batches, {tokens} tokens in {slots} padded slots "
                  f"({100 * (1 - tokens / slots):.0f} % padding); peer = {peer}")
            print(f"{'engine':<22} {'s/split':>8} {'sent/s':>8} {'vs peer':>8} {'min-max':>12} {'accuracy':>9}")
            for n in names:
                ratios = [p / t for p, t in zip(times[peer], times[n])]
                print(f"{n:<22} {med[n]:8.3f} {len(texts) / med[n]:8.1f} {statistics.median(ratios):7.2f}x "
                      f"{min(ratios):5.2f}-{max(ratios):.2f}x {acc[n]:9.4f}")
            pr = [p / q for p, q in zip(times["wb padded"], times["wb packed"])]
            print(f"packed over padded, same round: {statistics.median(pr):.2f}x ({min(pr):.2f}-{max(pr):.2f})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
