"""Measuring the dynamic study, one seed run at a time (`workbench.dynamic.report` summarizes).

For a seed run of `recipes/dynamic.yaml`: the operating points of the one trained model `lat`,
chosen on the validation split (`operating_points`), each measured on test on our int8 runtime and
in PyTorch fp32, on validation on the runtime, and timed at batch 1 over the first
`SPEED_EXAMPLES` test sentences at their own length, beside the teacher and the fixed-length
students, in one process (`measure_seed`).
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.config import ConfigError
from workbench.results import read_csv, read_json

BUDGETS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
EXIT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
"""Normalized entropy (0..1) at which an example leaves (0: never, 1: always at the first exit).
On the mean-pooled exits of the 3-layer study model about half the validation sentences leave
after layer 1 at 0.5 (the searches' exit sweeps)."""
SPEED_EXAMPLES = 200
SPEED_REPEATS = 3


def _searched(seed_run: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted((seed_run / "dynamic").glob("*/length_pareto.csv")):
        rows += [r for r in read_csv(path) if r["kind"] == "length"]
    if not rows:
        raise ConfigError(f"{seed_run} has no length search results (dynamic/<stage>/length_pareto.csv)")
    return rows


def operating_points(searched: list[dict[str, Any]], num_layers: int,
                     exit_layers: list[int] = ()) -> list[dict[str, Any]]:
    """The points chosen on validation: per budget the most accurate length configuration within
    it (ties: the cheaper), then full length with each exit threshold, then every example leaving
    at each exit (`exit_at`: is a lower layer useful on its own?)."""
    points = []
    for budget in BUDGETS:
        if budget >= 1.0:
            points.append({"point": "full length", "kind": "length", "budget": 1.0, "ratios": None, "threshold": None})
            continue
        fits = [r for r in searched if float(r["cost_fraction"]) <= budget]
        if not fits:
            continue
        best = max(fits, key=lambda r: (float(r["val_accuracy"]), -float(r["cost_fraction"])))
        points.append({"point": f"length ≤{budget:.2f}", "kind": "length", "budget": budget,
                       "ratios": json.loads(best["length_ratios"]), "threshold": None,
                       "val_accuracy": float(best["val_accuracy"])})
    for th in EXIT_THRESHOLDS:
        points.append({"point": f"exit entropy ≤{th}", "kind": "exit", "budget": None, "ratios": None, "threshold": th})
    for layer in exit_layers:
        points.append({"point": f"all leave after layer {layer + 1}", "kind": "exit_at", "budget": None, "ratios": None,
                       "threshold": None, "exit_at": layer})
    return points


def _examples(model_dir: Path, task: Any, split: str) -> tuple[list[dict[str, torch.Tensor]], np.ndarray]:
    """Each example of `split` unpadded (batch 1), tokenized with the stage's own tokenizer."""
    from workbench.data import tokenize_task
    from workbench.models.vocab import load_stage_tokenizer

    data = tokenize_task(task, load_stage_tokenizer(model_dir))[split].with_format(None)
    items = []
    for ids in data["input_ids"]:
        ids = torch.tensor([ids])
        items.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return items, np.asarray(data["labels"])


def _engine_predict(engine: Any, items: list[dict[str, torch.Tensor]], **overrides: Any) -> np.ndarray:
    return _engine_run(engine, items, **overrides)[0]


def _engine_run(engine: Any, items: list[dict[str, torch.Tensor]], **overrides: Any) -> tuple[np.ndarray, float]:
    """Predictions of the engine, one example per call, and the mean number of layers run."""
    preds, layers = [], []
    for x in items:
        preds.append(int(np.argmax(engine(x["input_ids"].numpy(), x["attention_mask"].numpy(), None, **overrides))))
        layers.append(int(engine.last_trace.layers_run[0]))
    return np.array(preds), float(np.mean(layers)) if layers else float("nan")


def _samples_per_s(call: Any, items: list[dict[str, torch.Tensor]]) -> float:
    """Median over repeats of examples per second, one example per call."""
    rates = []
    for _ in range(SPEED_REPEATS):
        start = time.perf_counter()
        for x in items:
            call(x)
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


@torch.no_grad()
def measure_seed(seed_run: Path) -> list[dict[str, Any]]:
    """Every operating point of one seed's trained model, plus the fixed-length baselines."""
    from workbench.data import load_task
    from workbench.models.arch import architecture
    from workbench.models.dynamic import DynamicSpec, dynamic_forward, model_spec
    from workbench.pipeline.spec import PipelineSpec
    from workbench.runtime import compile_model

    spec = PipelineSpec.from_yaml(seed_run / "recipe.yaml")
    task = load_task(spec.task, seed=spec.seed)
    measured = {m["stage"]: m for m in read_json(seed_run / "metrics.json")["stages"]}

    def model_dir(stage: str) -> Path:
        own = seed_run / "artifacts" / stage / "model"
        shared = Path(measured.get(stage, {}).get("reused_from") or "") / "model"
        for d in (own, shared):
            if (d / "config.json").exists():
                return d
        raise ConfigError(f"{seed_run}: stage '{stage}' has no saved model")

    from workbench.models.edits import load_edited_model

    lat_dir = model_dir("lat")
    lat = load_edited_model(lat_dir).eval()
    base = model_spec(lat) or DynamicSpec()
    static = base.replace(length_ratios=None, exit_threshold=None, exit_at=None)
    test, labels = _examples(lat_dir, task, "test")
    val, val_labels = _examples(lat_dir, task, "validation")
    speed_items = test[:SPEED_EXAMPLES]
    engine = compile_model(lat, quantize=True)
    rows: list[dict[str, Any]] = []
    seed = int(seed_run.name.split("-")[-1]) if seed_run.name.startswith("seed-") else spec.seed
    for p in operating_points(_searched(seed_run), architecture(lat, "lat").num_layers, base.exit_layers):
        s = static.replace(length_ratios=p["ratios"], exit_threshold=p["threshold"], exit_at=p.get("exit_at"))
        over = {"length_ratios": p["ratios"], "exit_threshold": p["threshold"], "exit_at": p.get("exit_at")}
        fp32 = np.array([int(dynamic_forward(lat, x["input_ids"], x["attention_mask"], s).argmax(-1)) for x in test])
        int8, layers_run = _engine_run(engine, test, **over)
        val_int8 = _engine_predict(engine, val, **over)  # what a researcher chooses the point by
        rows.append({"seed": seed, "model": "lat", "point": p["point"], "kind": p["kind"], "budget": p["budget"],
                     "length_ratios": json.dumps(p["ratios"]) if p["ratios"] else "", "exit_threshold": p["threshold"],
                     "val_accuracy": float((val_int8 == val_labels).mean()), "layers_run": layers_run,
                     "test_accuracy_fp32": float((fp32 == labels).mean()),
                     "test_accuracy": float((int8 == labels).mean()), "engine": "wb-int8",
                     "samples_per_s": _samples_per_s(lambda x: engine(x["input_ids"].numpy(), x["attention_mask"].numpy(),
                                                                      None, **over), speed_items)})
    for stage in ("teacher", "student", "demo-student"):
        if stage not in measured:
            continue
        d = model_dir(stage)
        model = load_edited_model(d).eval()
        items, y = _examples(d, task, "test")
        val_items, val_y = _examples(d, task, "validation") if stage == "teacher" else ([], None)
        eng = compile_model(model, quantize=True)
        for engine_name, predict, call in (
                ("torch-fp32", lambda xs: np.array([int(model(**x).logits.argmax(-1)) for x in xs]), lambda x: model(**x)),
                ("wb-int8", lambda xs: _engine_predict(eng, xs),
                 lambda x: eng(x["input_ids"].numpy(), x["attention_mask"].numpy(), None))):
            rows.append({"seed": seed, "model": stage, "point": "static", "kind": "static", "engine": engine_name,
                         "val_accuracy": float((predict(val_items) == val_y).mean()) if val_items else None,
                         "test_accuracy": float((predict(items) == y).mean()),
                         "samples_per_s": _samples_per_s(call, items[:SPEED_EXAMPLES])})
    teacher = [r for r in rows if r["model"] == "teacher" and r["engine"] == "torch-fp32"]
    for r in rows:
        r["speedup_vs_teacher_fp32"] = r["samples_per_s"] / teacher[0]["samples_per_s"] if teacher else float("nan")
    return rows
