"""Shared settings for the notebook tour.

Every notebook starts from the demo's teacher stage (`cache: true`), with the same quick
settings, so the teacher is fine-tuned once and then reused from the stage cache by all of
them. With `quick = True` each training stage takes a handful of optimizer steps on a few
hundred examples: the numbers are a smoke test, not results. With `quick = False` the
notebooks run the recipes as written (full data, minutes to hours on a CPU).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "recipes" / "demo.yaml"

# tiny quick mode: few examples, a few steps per training stage
TINY_QUICK = {"train_examples": 128, "eval_examples": 64, "epochs": 1, "speed_iters": 2}
TINY_STEPS = 4
TINY_BATCH = 16


def demo() -> dict[str, Any]:
    """recipes/demo.yaml as a dict."""
    return yaml.safe_load(DEMO.read_text())


def teacher_stage() -> dict[str, Any]:
    """The demo's teacher stage (fine-tune MiniLM-L6, cached across runs and notebooks)."""
    return copy.deepcopy(demo()["stages"][0])


def shrink(recipe: dict[str, Any]) -> dict[str, Any]:
    """The tiny quick-mode version of a recipe: small quick subset, a few optimizer steps."""
    d = copy.deepcopy(recipe)
    d["quick"] = dict(TINY_QUICK)
    d["eval"] = {**d.get("eval", {}), "speed_batches": [1]}
    for stage in d["stages"]:
        if "train" in stage:
            stage["train"] = {**stage["train"], "max_steps": TINY_STEPS, "batch_size": TINY_BATCH,
                              "checkpoint_every": 0}
    return d


def recipe(name: str, stages: list[dict[str, Any]], quick: bool = True) -> dict[str, Any]:
    """A pipeline on the embedded default (minilm-l6, rt-sentiment): the demo's teacher, then `stages`."""
    d = demo()
    d["name"] = name
    d["stages"] = [teacher_stage(), *copy.deepcopy(stages)]
    return shrink(d) if quick else d


def run_name(name: str, quick: bool) -> str:
    """Quick runs are called quick-<name> (as `workbench run --quick` does; git ignores them)."""
    return f"quick-{name}" if quick else name


def table(stages: list[dict[str, Any]]) -> Any:
    """The stage metrics as a pandas DataFrame."""
    import pandas as pd

    cols = ["stage", "engine", "accuracy", "macro_f1", "params", "nonzero_params", "sparsity", "disk_mb",
            "latency_ms_b1", "throughput_b1", "train_seconds"]
    df = pd.DataFrame([{c: s.get(c) for c in cols} for s in stages]).set_index("stage")
    return df.round({"accuracy": 4, "macro_f1": 4, "sparsity": 3, "disk_mb": 1, "latency_ms_b1": 1,
                     "throughput_b1": 1})
