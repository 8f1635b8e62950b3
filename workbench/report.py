"""`workbench report RUN_OR_SWEEP`: plots + a markdown report of a pipeline run or a sweep.

    workbench report quick-demo                # results/quick-demo/report/
    workbench report results/sweeps/demo-sweep # results/sweeps/demo-sweep/report/
    workbench report demo-sweep --storage postgresql://user:pw@host/db

A run gets accuracy vs throughput, per-layer sparsity and the stage waterfall. A sweep gets its
Pareto front (the teacher, and the front trials' own models on peer engines), parameter importance, and
the run plots of its most accurate Pareto trial (`workbench.sweep.report`, which the sweep
runner also calls; this module does not import the runner).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.config import ConfigError
from workbench.paths import results_dir
from workbench.results import REPORT_STAGE_COLUMNS, atomic_write_text, format_stage_table
from workbench.sweep.report import sweep_report  # noqa: F401  (the sweep half lives with the sweeps)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a run or sweep: a folder, a run name under results/, or a sweep name "
                                       "under results/sweeps/")
    parser.add_argument("--storage", help="the sweep's Optuna storage URL (default: its study.db, or the URL "
                                          "it recorded)")
    parser.add_argument("--peers", help="a sweep's peer table (default <sweep>/peers.csv, written by the sweep)")


def resolve_target(target: str) -> tuple[str, Path]:
    """('run' | 'sweep', folder)."""
    # an absolute target makes all three the same folder: each is looked in (and named) once
    cands = list(dict.fromkeys([Path(target), results_dir() / target, results_dir() / "sweeps" / target]))
    for c in cands:
        if (c / "sweep.yaml").is_file():
            return "sweep", c
        if (c / "metrics.json").is_file():
            return "run", c
    raise ConfigError(f"no run or sweep at '{target}' (looked for metrics.json or sweep.yaml in "
                      f"{', '.join(str(c) for c in cands)})")


def run_report(run_dir: Path | str, out: Path | None = None) -> Path:
    """Plots + README.md for one pipeline run, in <run>/report/. Returns the report folder."""
    from workbench.plots import accuracy_vs_throughput, per_layer_sparsity, stage_waterfall

    run_dir = Path(run_dir)
    data = json.loads((run_dir / "metrics.json").read_text())
    stages = data["stages"]
    out = Path(out or run_dir / "report")
    name = data.get("run", run_dir.name)
    accuracy_vs_throughput(stages, out / "accuracy_vs_throughput.png", title=f"{name}: accuracy vs throughput")
    per_layer_sparsity(stages, out / "per_layer_sparsity.png", title=f"{name}: per-layer sparsity")
    stage_waterfall(stages, out / "stage_waterfall.png", title=f"{name}: through the stages")
    lines = [f"# Run `{name}`", "",
             f"Model `{data.get('model')}` on `{data.get('task')}` ({'quick' if data.get('quick') else 'full'} mode, "
             f"{data.get('eval_examples', '?')} {data.get('split', 'test')} examples), created {data.get('created')}.",
             "", format_stage_table(stages, REPORT_STAGE_COLUMNS, fmt="markdown"), "",
             "![accuracy vs throughput](accuracy_vs_throughput.png)", "",
             "![stage waterfall](stage_waterfall.png)", "",
             "![per-layer sparsity](per_layer_sparsity.png)", ""]
    atomic_write_text(out / "README.md", "\n".join(lines))
    return out


def run(args: argparse.Namespace) -> int:
    kind, folder = resolve_target(args.target)
    out = (sweep_report(folder, storage=args.storage, peers_csv=args.peers) if kind == "sweep"
           else run_report(folder))
    print(f"report: {out / 'README.md'}")
    for png in sorted(out.glob("*.png")):
        print(f"  {png}")
    return 0
