"""A run's records: its tables, rewritten after every stage so a killed run leaves what it
finished -- metrics.json (the run's settings and one metrics dict per stage) and stages.csv
(`STAGE_COLUMNS`) -- and its figures, the accuracy-vs-throughput plot and, where stages trained,
their loss terms per step. Drawing the figures takes ~0.5-2.5 s (matplotlib), as long as a quick
stage, so the pipeline redraws them at most every `FIGURE_EVERY_S` and when the run ends or fails."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from workbench.data import Task
from workbench.pipeline.spec import PipelineSpec, StageSpec
from workbench.results import read_csv, write_csv, write_json

STAGE_COLUMNS = ["stage", "engine", "accuracy", "macro_f1", "params", "nonzero_params", "sparsity",
                 "disk_mb", "zlib_mb", "latency_ms_b1", "throughput_b1", "latency_ms_b8", "throughput_b8",
                 "seq_len", "threads", "isa", "load_avg", "speed_process", "train_seconds", "pruning_seconds",
                 "flops_removed", "seed", "degenerate"]


FIGURE_EVERY_S = 60.0


def write_run_records(run_dir: Path, spec: PipelineSpec, task: Task, metrics: list[dict[str, Any]], *,
                      quick: bool, seed: int, eval_examples: int) -> None:
    """Write the tables of `run_dir` for the stages measured so far (`metrics`, in order)."""
    write_json(run_dir / "metrics.json", {
        "run": run_dir.name, "task": spec.task.name, "labels": task.label_names,
        "model": spec.model, "quick": quick,
        "seed": seed, "split": spec.eval.split, "eval_examples": eval_examples,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": metrics})
    write_csv(run_dir / "stages.csv", metrics, STAGE_COLUMNS)


def print_stage_result(stage: StageSpec, m: dict[str, Any], spec: PipelineSpec, seconds: float) -> None:
    """The progress line of a finished stage (and a warning when its model is degenerate)."""
    how = ("reused" if m.get("reused_from") else
           f"trained {m.get('train_seconds', 0):.0f} s" if stage.trains else "one-shot")
    b = spec.eval.speed_batches[0]
    print(f"[workbench]   {stage.name}: accuracy {m['accuracy']:.4f}, {m[f'throughput_b{b}']:.1f} "
          f"samples/s at batch {b} ({how}, {seconds:.0f} s in all)", flush=True)
    if m.get("degenerate"):
        print(f"[workbench]   WARNING stage {stage.name}: {m['degenerate']} "
              f"(on the {spec.eval.split} split)", flush=True)


def write_run_figures(run_dir: Path, spec: PipelineSpec, metrics: list[dict[str, Any]], *, quick: bool) -> None:
    """Draw the figures of `run_dir` for the stages measured so far."""
    from workbench.plots import accuracy_vs_throughput

    accuracy_vs_throughput(metrics, run_dir / "accuracy_vs_throughput.png",
                           title=f"{spec.name}: {spec.model} on {spec.task.name}"
                                 + (" (quick)" if quick else ""),
                           batch=spec.eval.speed_batches[0])
    histories = {p.stem: read_csv(p) for p in sorted((run_dir / "history").glob("*.csv"))}
    histories = {k: v for k, v in histories.items() if v and k in {m["stage"] for m in metrics}}
    if histories:
        _loss_terms(histories, run_dir / "loss_terms.png", title=f"{spec.name}: loss terms per step")


# path -> (a digest of what its loss-terms figure was drawn from, the file's size and mtime after writing)
_LOSS_TERMS_DRAWN: dict[Path, tuple[str, int, int]] = {}


def _loss_terms(histories: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    """The loss-terms figure, redrawn only when its input changed: a stage that does not train
    (quantize, one-shot prune) adds no history, and the figure it would draw is the file already
    there (kept when this process wrote it from the same histories and it is unchanged since)."""
    from workbench.plots.seeds import loss_terms_plot

    drawn_from = hashlib.sha256(repr((title, sorted(histories.items()))).encode()).hexdigest()
    key = path.resolve()
    seen = _LOSS_TERMS_DRAWN.get(key)
    try:
        st = path.stat()
        same_file = seen is not None and (st.st_size, st.st_mtime_ns) == seen[1:]
    except OSError:
        same_file = False
    if same_file and seen[0] == drawn_from:
        return
    loss_terms_plot(histories, path, title=title)
    st = path.stat()
    _LOSS_TERMS_DRAWN[key] = (drawn_from, st.st_size, st.st_mtime_ns)
