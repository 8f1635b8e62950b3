"""`workbench sweep SWEEP.yaml`: run or continue an Optuna sweep over a recipe's settings.

    workbench sweep sweeps/demo_sweep.yaml --quick                 # SQLite in results/sweeps/<name>/
    workbench sweep sweeps/demo_sweep.yaml --workers 2             # two worker processes, one study
    workbench sweep sweeps/demo_sweep.yaml --storage postgresql://user:pw@host/db   # many machines
    workbench sweep sweeps/demo_sweep.yaml --trials 16             # continue the same study to 16

Re-running the same command continues the study: finished trials are kept, trials of dead
workers are marked FAIL and re-run once. The best trials are exported to `best/` as recipes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workbench.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", help="sweep file (YAML): base recipe + search space")
    parser.add_argument("--quick", action="store_true", default=None,
                        help="run each trial's pipeline in quick mode (default: the sweep file's 'quick')")
    parser.add_argument("--trials", type=int, help="total trials of the study (default: the sweep file's)")
    parser.add_argument("--workers", type=int, help="worker processes on this machine (default 1)")
    parser.add_argument("--storage", help="SQLAlchemy URL of the Optuna storage, e.g. postgresql://user:pw@host/db "
                                          "(default: sqlite file results/sweeps/<name>/study.db)")
    parser.add_argument("--name", help="study name (default: the sweep file's name)")
    parser.add_argument("--results", help="results root (default ./results)")
    parser.add_argument("--fresh", action="store_true", help="delete the study and its trials and start over")
    parser.add_argument("--no-report", action="store_true", help="skip the plots and report at the end")
    parser.add_argument("--worker-id", type=int, help=argparse.SUPPRESS)  # internal: one worker process


def run(args: argparse.Namespace) -> int:
    from workbench.sweep.runner import STORAGE_ENV, run_sweep, storage_url, work
    from workbench.sweep.parse import load_sweep

    sweep = load_sweep(args.sweep)
    if args.trials is not None:
        if args.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {args.trials}")
        sweep.trials = args.trials
    if args.quick and not sweep.quick and not args.name:
        sweep.name = f"quick-{sweep.name}"  # like `workbench run --quick`: a quick study of its own
    if args.name:
        if "/" in args.name:
            raise ConfigError(f"--name must not contain '/', got {args.name!r}")
        sweep.name = args.name
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    root = Path(args.results) if args.results else None
    quick = True if args.quick else None
    if args.worker_id is not None:  # a worker process started by the main command
        import os

        work(sweep, storage_url(sweep, root, args.storage or os.environ.get(STORAGE_ENV)), root=root,
             quick=sweep.quick if quick is None else quick, worker_id=args.worker_id)
        return 0
    result = run_sweep(sweep, root=root, storage=args.storage, workers=args.workers, quick=quick,
                       fresh=args.fresh, report=not args.no_report)
    _print_front(sweep, result)
    return 0


def _print_front(sweep, result) -> None:
    from workbench.results import format_stage_table

    c = result["counts"]
    print(f"\n{sweep.name}: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed trials")
    title = "Pareto front" if sweep.multi else f"top {sweep.top_k}"
    print(f"{title} (exported to {result['dir'] / 'best'}):")
    print(format_stage_table(result["best"], [("trial", "{}"), ("val_accuracy", "{:.4f}", "val accuracy (chosen on)"),
                                              ("test_accuracy", "{:.4f}", "test accuracy (reported)"),
                                              ("throughput", "{:.1f}"), "params", "nonzero_params", "engine"]))
    print(f"\nresults: {result['dir']}")


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="workbench sweep", description=__doc__.split("\n")[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except (ConfigError, FileNotFoundError) as exc:
        print(f"workbench sweep: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
