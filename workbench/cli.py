"""`workbench` command line: run a recipe, list tasks and models, show, compare, evaluate and
export a run's stages, bench engines, sweep a recipe's knobs, report a run or sweep."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from workbench.cli_runs import cmd_compare, cmd_eval, cmd_export, cmd_show, print_table, spread_rows
from workbench.config import ConfigError
from workbench.paths import check_output_path


def _cmd_run(args: argparse.Namespace) -> int:
    import time

    started = time.perf_counter()
    from workbench.pipeline import PipelineRun, PipelineSpec

    spec = PipelineSpec.from_yaml(args.recipe)  # validates everything before work starts
    name = args.name or (f"quick-{spec.name}" if args.quick else spec.name)
    if args.seeds is not None:   # given, even if empty: an empty list is an error, not one run
        from workbench.pipeline.seeds import run_seeds

        seeds = _parse_seeds(args.seeds)
        rows = run_seeds(spec, seeds, quick=args.quick, results_root=Path(args.results) if args.results else None,
                         run_name=name, fresh=args.fresh, remeasure=args.remeasure)
        from workbench.pipeline.seeds import aggregate

        print_table(spread_rows(aggregate(rows)),
                     ["stage", ("n", "{}"), "accuracy", "macro_f1", "throughput_b1", "throughput_b8"])
        print(f"\nresults: {Path(args.results or 'results') / name} ({time.perf_counter() - started:.0f} s)")
        return 0
    run = PipelineRun(spec, quick=args.quick, results_root=Path(args.results) if args.results else None,
                      run_name=name, fresh=args.fresh, remeasure=args.remeasure)
    metrics = run.run()
    print_table(metrics)
    print(f"\nresults: {run.run_dir} ({time.perf_counter() - started:.0f} s)")
    return 0


def _cmd_degrade(args: argparse.Namespace) -> int:
    from workbench.degrade import degrade, parse_fractions
    from workbench.pipeline import PipelineSpec

    fractions = parse_fractions(args.fractions)  # bad fractions fail before the recipe is even read
    spec = PipelineSpec.from_yaml(args.recipe)
    seeds = _parse_seeds(args.seeds) if args.seeds is not None else [spec.seed]
    name = args.name or (f"quick-{spec.name}" if args.quick else spec.name)
    _, summary = degrade(spec, fractions, seeds, quick=args.quick, results_root=Path(args.results) if args.results else None,
                         run_name=name, fresh=args.fresh, min_steps=args.min_steps)
    print_table(summary, ["stage", ("points", "{}"), ("slope_per_decade", "{:+.4f}"), ("accuracy_smallest", "{:.4f}"),
                           ("accuracy_largest", "{:.4f}")])
    print(f"\nresults: {Path(args.results or 'results') / name} (degradation.csv, summary.csv, degradation.png)")
    return 0


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be a comma-separated list of integers, e.g. 0,1,2; got {text!r}") from None
    if not seeds:
        raise ConfigError(f"--seeds must list at least one seed, e.g. 0,1,2; got {text!r}")
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds must list distinct integers >= 0, got {text!r}")
    return seeds


def _cmd_tasks(args: argparse.Namespace) -> int:
    from workbench.data import list_tasks

    for t in list_tasks():
        print(f"{t['name']}\n  {t['description']}\n  source: {t['source']}\n  licence: {t['licence']}")
    print("\nAlso: any local .csv/.tsv/.jsonl/.json/.parquet file, a folder of train/validation/test files or a "
          "Hugging Face dataset saved with save_to_disk (text/label columns), and 'hf:<dataset>' for Hugging "
          "Face datasets (from the local cache, or downloaded with WORKBENCH_ALLOW_DOWNLOAD=1).")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from workbench.models import MODELS

    for m in MODELS.values():
        print(f"{m.name}  ({m.params} params)\n  {m.description}")
    from workbench.models.families import SUPPORTED_TEXT

    print("\nAlso: any local Hugging Face model folder, or a hub name (set WORKBENCH_ALLOW_DOWNLOAD=1 "
          "to download; offline by default). Every recipe and the runtime work on the families "
          f"{SUPPORTED_TEXT}; other sequence classifiers fine-tune, distil by logits and quantize with "
          "PyTorch's dynamic int8.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a pipeline recipe (YAML)")
    r.add_argument("recipe")
    r.add_argument("--quick", action="store_true", help="same stages on a small subset (minutes)")
    r.add_argument("--name", help="run name (default: the recipe's name, quick-<name> with --quick)")
    r.add_argument("--results", help="results root folder (default: ./results)")
    r.add_argument("--fresh", action="store_true", help="discard earlier results of this run instead of resuming")
    r.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2: one run per seed under results/<name>/seed-<s>/, "
                                   "plus seeds.csv and summary.csv (mean, std, 95%% interval per stage)")
    r.add_argument("--remeasure", action="store_true",
                   help="re-measure finished stages (accuracy, size, speed) without retraining them")
    r.set_defaults(func=_cmd_run)
    d = sub.add_parser("degrade", help="train the pipeline on nested stratified fractions of the training split; "
                                       "accuracy vs training size per stage, with the degradation slope")
    d.add_argument("recipe")
    d.add_argument("--fractions", default="0.01,0.05,0.1,0.25,0.5,1.0", help="sorted, distinct, in (0, 1]")
    d.add_argument("--seeds", help="comma-separated training seeds (default: the recipe's seed)")
    d.add_argument("--quick", action="store_true", help="fractions of the quick subset, quick settings")
    d.add_argument("--name", help="run name (default: the recipe's name, quick-<name> with --quick)")
    d.add_argument("--results", help="results root folder (default: ./results)")
    d.add_argument("--fresh", action="store_true", help="discard earlier results instead of resuming")
    d.add_argument("--min-steps", type=int, default=0,
                   help="train each stage for at least this many optimizer steps on a small fraction (more epochs)")
    d.set_defaults(func=_cmd_degrade)
    sub.add_parser("tasks", help="list the embedded tasks").set_defaults(func=_cmd_tasks)
    sub.add_parser("models", help="list the embedded models").set_defaults(func=_cmd_models)
    c = sub.add_parser("compare", help="method comparison table + plot from a --seeds run (stages named student.method)")
    c.add_argument("run", help="run name under results/ or a folder holding seeds.csv")
    c.add_argument("--structural", action="store_true",
                   help="a structural run (stages <method>-<pct>): FLOPs, pruning time and memory, and the "
                        "cross-engine speed of `workbench bench --run` (speed.csv) per stage")
    c.add_argument("--quantization", action="store_true",
                   help="a quantization run (stages <fp32 stage>.<method>): accuracy drop against the fp32 stage, "
                        "size, and per-engine speed of `workbench bench --run` (speed.csv)")
    c.add_argument("--dynamic", action="store_true",
                   help="a dynamic-inference run (recipes/dynamic.yaml): the one trained model's operating points "
                        "(length budgets, exit thresholds) chosen on validation, measured on test and timed on our runtime")
    c.add_argument("--teachers", action="store_true",
                   help="a teachers-and-data run (recipes/multi_teacher.yaml, recipes/pseudo_labels.yaml): the method "
                        "table plus claims.csv (did each paper's claim hold, paired by seed), the pseudo-label keep "
                        "report and LogME's rank agreement where they apply")
    c.add_argument("--out", default=None, help="with --structural, --quantization or --dynamic: where the report goes "
                                               "(default: the run's folder)")
    c.add_argument("--with", dest="with_runs", action="append", default=[], metavar="OTHER_RUN",
                   help="join another --seeds run's method rows (repeatable), e.g. methods run separately from the "
                        "same cached teacher and student: their shared stages must score the same on every seed")
    c.set_defaults(func=cmd_compare)
    s = sub.add_parser("show", help="print a run's stage table")
    s.add_argument("run", help="run name under results/ or a folder")
    s.set_defaults(func=cmd_show)
    e = sub.add_parser("eval", help="measure a run's finished stages on another task with the same labels "
                                    "(domain shift) -> <run>/eval-<task>.csv")
    e.add_argument("run", help="run name under results/ or a run folder")
    e.add_argument("--task", required=True, help="embedded task, local .csv/.tsv/.jsonl/.json/.parquet file or "
                   "folder, a dataset saved with save_to_disk, or hf:<name>")
    e.add_argument("--stage", help="only this stage (default: every finished stage)")
    e.add_argument("--split", default="test", help="split of the other task (default: test)")
    e.add_argument("--text-column", help="text column of a local task file (default: text)")
    e.add_argument("--text-pair-column", help="second text column of a text-pair task (e.g. hypothesis)")
    e.add_argument("--label-column", help="label column of a local task file (default: label)")
    e.set_defaults(func=cmd_eval)
    x = sub.add_parser("export", help="a finished stage as ONNX or a Hugging Face folder, its logits checked in the "
                                      "target runtime first -> <run>/export/")
    x.add_argument("run", help="run name under results/ or a run folder")
    x.add_argument("--stage", help="the stage (default: the run's last finished stage)")
    x.add_argument("--format", required=True, choices=["onnx", "hf"], help="onnx (ONNX Runtime) or hf (save_pretrained)")
    x.add_argument("--out", help="destination (default: <run>/export/<stage>.onnx or <run>/export/<stage>-hf/)")
    x.add_argument("--accuracy", action="store_true",
                   help="then run the written file and the stage on the run's evaluation examples and print both "
                        "accuracies")
    x.set_defaults(func=cmd_export)
    for module, name, help_text in (("workbench.bench.cli", "bench", "benchmark engines against peers"),
                                    ("workbench.sweep.cli", "sweep", "Optuna sweep over a recipe's knobs"),
                                    ("workbench.report", "report", "plots + markdown report of a run or sweep")):
        try:
            mod = __import__(module, fromlist=["add_arguments", "run"])
        except ImportError as exc:  # the command stays listed and says why it cannot run
            sp = sub.add_parser(name, help=f"{help_text} (unavailable here: {exc})")
            sp.add_argument("args", nargs=argparse.REMAINDER)
            sp.set_defaults(func=_unavailable(name, exc))
            continue
        sp = sub.add_parser(name, help=help_text)
        mod.add_arguments(sp)
        sp.set_defaults(func=mod.run)
    return p


def _unavailable(name: str, exc: ImportError) -> Any:
    def run(args: argparse.Namespace) -> int:
        print(f"workbench {name}: error: it cannot run here, as a module it needs does not import ({exc}); "
              "`make setup` installs everything it needs", file=sys.stderr)
        return 2
    return run


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if os.environ.get("WORKBENCH_ALLOW_DOWNLOAD") == "1" else "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        from workbench.plugins import load_entry_point_plugins

        load_entry_point_plugins()
        name = getattr(args, "name", None)  # a run or study name is one folder under the results root
        if name is not None and (not name.strip() or "/" in name or "\\" in name or name in (".", "..")):
            raise ConfigError(f"--name must be a non-empty name without '/' (one folder under the results root), "
                              f"got {name!r}")
        for flag in ("results", "out"):  # output folders (export's --out may name a file)
            if getattr(args, flag, None) is not None:
                check_output_path(getattr(args, flag), f"--{flag}", folder=args.func is not cmd_export)
        return int(args.func(args) or 0)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
