"""`workbench report RUN_OR_SWEEP`: plots + a markdown report of a pipeline run or a sweep.

    workbench report quick-demo                # results/quick-demo/report/
    workbench report results/sweeps/demo-sweep # results/sweeps/demo-sweep/report/
    workbench report demo-sweep --storage postgresql://user:pw@host/db

A run gets accuracy vs throughput, per-layer sparsity and the stage waterfall. A sweep gets its
Pareto front (teacher and `workbench bench` peers as references), parameter importance, and
the run plots of its most accurate Pareto trial.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.paths import results_dir
from workbench.results import atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a run or sweep: a folder, a run name under results/, or a sweep name "
                                       "under results/sweeps/")
    parser.add_argument("--storage", help="the sweep's Optuna storage URL (default: its study.db, or the URL "
                                          "it recorded)")
    parser.add_argument("--peers", help="engines.csv of `workbench bench` (default results/bench/engines.csv)")


def resolve_target(target: str) -> tuple[str, Path]:
    """('run' | 'sweep', folder)."""
    cands = [Path(target), results_dir() / target, results_dir() / "sweeps" / target]
    for c in cands:
        if (c / "sweep.yaml").is_file():
            return "sweep", c
        if (c / "metrics.json").is_file():
            return "run", c
    raise ConfigError(f"no run or sweep at '{target}' (looked for metrics.json or sweep.yaml in "
                      f"{', '.join(str(c) for c in cands)})")


def _fmt(v: Any, spec: str = "{:.4f}") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return spec.format(v)
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _stage_table(stages: list[dict[str, Any]]) -> list[str]:
    cols = [("stage", "{}"), ("engine", "{}"), ("accuracy", "{:.4f}"), ("params", "{}"), ("nonzero_params", "{}"),
            ("sparsity", "{:.1%}"), ("disk_mb", "{:.1f}"), ("latency_ms_b1", "{:.1f}"), ("throughput_b1", "{:.1f}")]
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for s in stages:
        lines.append("| " + " | ".join(_fmt(s.get(c), f) for c, f in cols) + " |")
    return lines


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
             "", *_stage_table(stages), "",
             "![accuracy vs throughput](accuracy_vs_throughput.png)", "",
             "![stage waterfall](stage_waterfall.png)", "",
             "![per-layer sparsity](per_layer_sparsity.png)", ""]
    atomic_write_text(out / "README.md", "\n".join(lines))
    return out


def _load_sweep_study(folder: Path, storage: str | None) -> Any:
    import yaml

    from workbench.sweep.runner import _optuna, with_driver

    optuna = _optuna()
    info = yaml.safe_load((folder / "sweep.yaml").read_text()) or {}
    url = storage or os.environ.get("WORKBENCH_SWEEP_STORAGE")
    if not url and (folder / "study.db").is_file():
        url = f"sqlite:///{(folder / 'study.db').resolve()}"
    url = url or info.get("storage")
    if not url or "***" in url:
        raise ConfigError(f"sweep '{folder.name}': its storage needs a password; pass --storage URL")
    url = with_driver(url)
    try:
        return optuna.load_study(study_name=folder.name, storage=url)
    except KeyError:
        return optuna.load_study(study_name=info.get("name", folder.name), storage=url)


def sweep_report(folder: Path | str, study: Any = None, storage: str | None = None,
                 peers_csv: Path | str | None = None) -> Path:
    """Plots + README.md for a sweep, in <sweep>/report/. Returns the report folder."""
    from optuna.trial import TrialState

    from workbench.plots import param_importance, param_importances, pareto_front, read_peers
    from workbench.plots.runs import per_layer_sparsity, stage_waterfall
    from workbench.sweep.runner import best_trials, trial_rows

    folder = Path(folder)
    study = study or _load_sweep_study(folder, storage)
    out = folder / "report"
    objectives = study.user_attrs.get("objectives") or ["accuracy", "throughput"]
    rows = trial_rows(study, objectives)
    done = [r for r in rows if r["state"] == "COMPLETE"]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    first = min(complete, key=lambda t: t.number) if complete else None
    teacher = (first.user_attrs.get("stages") or [None])[0] if first else None
    first_metrics = folder / "trials" / str(first.number) / "metrics.json" if first else None
    if first_metrics is not None and first_metrics.is_file():
        teacher = json.loads(first_metrics.read_text())["stages"][0]
    recipe = (first.user_attrs.get("recipe") or {}) if first else {}
    seq_len = (recipe.get("eval") or {}).get("seq_len")
    peers_path = Path(peers_csv) if peers_csv else folder.parent.parent / "bench" / "engines.csv"
    peers = read_peers(peers_path, seq_len=seq_len, threads=(teacher or {}).get("threads"))
    quick = (study.user_attrs.get("sweep") or {}).get("quick")
    pareto_front(done, out / "pareto.png", teacher=teacher, peers=peers, seq_len=seq_len,
                 title=f"sweep {folder.name}: accuracy vs throughput ({len(done)} trials"
                       + (", quick" if quick else "") + ")")
    imps, why = param_importances(study)
    param_importance(imps, out / "param_importance.png", message=why, title=f"sweep {folder.name}: parameter importance")

    best = best_trials(study, top_k=3)
    lines = [f"# Sweep `{folder.name}`", "",
             f"Objectives: {', '.join(objectives)} (maximised; throughput is batch-1 samples/s of the last stage). "
             f"Trials: {sum(r['state'] == 'COMPLETE' for r in rows)} complete, "
             f"{sum(r['state'] == 'PRUNED' for r in rows)} pruned, {sum(r['state'] == 'FAIL' for r in rows)} failed, "
             f"{sum(r['state'] == 'RUNNING' for r in rows)} running.", "",
             f"## {'Pareto front' if len(objectives) > 1 else 'Best trials'}", "",
             "| trial | accuracy | throughput (samples/s) | params | non-zero params | engine | stages | recipe |",
             "|---|---|---|---|---|---|---|---|"]
    by_number = {r["number"]: r for r in rows}
    for t in best:
        r = by_number[t.number]
        lines.append(f"| {t.number} | {_fmt(r['accuracy'])} | {_fmt(r['throughput'], '{:.1f}')} | {_fmt(r['params'])} "
                     f"| {_fmt(r['nonzero_params'])} | {r['engine']} | {r['stages']} | "
                     f"[trial-{t.number}.yaml](../best/trial-{t.number}.yaml) |")
    if teacher:
        lines += ["", f"Reference: teacher (first stage of trial {first.number}) accuracy {_fmt(teacher.get('accuracy'))}, "
                      f"{_fmt(teacher.get('throughput_b1'), '{:.1f}')} samples/s ({teacher.get('engine')})."]
    lines += ["", ("Peers (vertical lines) from " + str(peers_path) + ": "
                   + ", ".join(f"{p['engine']} {p['throughput']:.1f}/s ({p['threads']} thr)" for p in peers))
              if peers else f"Peers: none ({peers_path} absent or without minilm rows at batch 1"
                            + (f", seq {seq_len}" if seq_len else "") + "; run `workbench bench`).",
              "", "![pareto](pareto.png)", "", "## Parameter importance", ""]
    if imps:
        lines += ["| parameter | " + " | ".join(imps) + " |", "|---|" + "---|" * len(imps)]
        for p in sorted({p for d in imps.values() for p in d}):
            lines.append(f"| `{p}` | " + " | ".join(f"{d.get(p, 0.0):.3f}" for d in imps.values()) + " |")
    else:
        lines.append(f"_{why}_")
    lines += ["", "![importance](param_importance.png)", ""]
    if best:
        top = best[0]
        trial_metrics = folder / "trials" / str(top.number) / "metrics.json"
        stages = (json.loads(trial_metrics.read_text())["stages"] if trial_metrics.is_file()
                  else top.user_attrs.get("stages") or [])
        if stages:
            stage_waterfall(stages, out / "best_stage_waterfall.png", title=f"trial {top.number}: through the stages")
            per_layer_sparsity(stages, out / "best_per_layer_sparsity.png", title=f"trial {top.number}: per-layer sparsity")
            lines += [f"## Most accurate {'Pareto ' if len(objectives) > 1 else ''}trial: {top.number}", "",
                      *_stage_table(stages), "", "![waterfall](best_stage_waterfall.png)", "",
                      "![sparsity](best_per_layer_sparsity.png)", ""]
    lines += ["## All trials", "", "| trial | state | accuracy | throughput | params | duration (s) | parameters |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        ps = "; ".join(f"{k[6:].replace('stages.', '').replace('recipes.', '')}="
                       + (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in r.items() if k.startswith("param:"))
        lines.append(f"| {r['number']} | {r['state']} | {_fmt(r['accuracy'])} | {_fmt(r['throughput'], '{:.1f}')} | "
                     f"{_fmt(r['params'])} | {_fmt(r['duration_s'], '{:.0f}')} | {ps} |")
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
    return out


def run(args: argparse.Namespace) -> int:
    kind, folder = resolve_target(args.target)
    out = (sweep_report(folder, storage=args.storage, peers_csv=args.peers) if kind == "sweep"
           else run_report(folder))
    print(f"report: {out / 'README.md'}")
    for png in sorted(out.glob("*.png")):
        print(f"  {png}")
    return 0
