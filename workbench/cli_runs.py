"""The `workbench` commands that read a finished run -- show, compare, eval, export -- and the
stage table they print (`workbench run` prints it too). `workbench.cli` builds the parser."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench.config import ConfigError


def spread_rows(summary: list[dict]) -> list[dict]:
    """Aggregated rows as 'mean ± std' strings, for the stage table."""
    out = []
    for row in summary:
        r = {"stage": row["stage"], "n": row["n"]}
        for m, fmt in (("accuracy", ".4f"), ("macro_f1", ".4f"), ("throughput_b1", ".1f"), ("throughput_b8", ".1f")):
            if f"mean_{m}" in row:
                r[m] = f"{row[f'mean_{m}']:{fmt}} ± {row[f'std_{m}']:{fmt}}"
        out.append(r)
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    from workbench.paths import run_folder
    from workbench.pipeline.compare import compare
    from workbench.prune.report import structural_report
    from workbench.quantize.report import quantization_report

    folder = run_folder(args.run)
    kinds = [k for k in ("structural", "quantization", "dynamic") if getattr(args, k)]
    if len(kinds) + bool(args.teachers) > 1:
        raise ConfigError("compare: choose one of --structural, --quantization, --dynamic and --teachers")
    figure = {"structural": "accuracy_vs_throughput.png", "quantization": "accuracy_vs_size.png",
              "dynamic": "accuracy_vs_throughput.png"}.get(kinds[0] if kinds else "", "methods.png")
    if args.with_runs and (kinds or args.teachers):
        raise ConfigError("compare: --with joins method tables; it does not go with --structural, --quantization, "
                          "--dynamic or --teachers")
    if kinds:
        if kinds[0] == "dynamic":
            from workbench.dynamic.report import dynamic_report as report
        else:
            report = structural_report if kinds[0] == "structural" else quantization_report
        report(folder, args.out)
        folder = Path(args.out) if args.out else folder
    elif args.out:
        raise ConfigError("--out goes with --structural, --quantization or --dynamic (a method comparison is written "
                          "next to its run)")
    elif args.teachers:
        from workbench.teachers_report import teachers_report

        teachers_report(folder)
    else:
        compare(folder, [run_folder(o) for o in args.with_runs])
    print((folder / "table.md").read_text())
    print(f"written: {folder / 'summary.csv'}, {folder / 'table.md'}, {folder / figure}")
    return 0


def print_table(stages: list[dict], columns: list | None = None) -> None:
    """The stage table (default columns: workbench.results.STAGE_COLUMNS); values that are
    already strings (e.g. "0.8250 ± 0.0040") are printed as they are."""
    from workbench.results import degenerate_notes, format_stage_table

    print(format_stage_table(stages, columns))
    for note in degenerate_notes(stages):  # the "!" marks in the table
        print(note)


def cmd_show(args: argparse.Namespace) -> int:
    from workbench.paths import run_folder

    path = run_folder(args.run)
    metrics_file = path / "metrics.json"
    spread = path / "seeds_summary.csv"
    if not metrics_file.exists() and spread.exists():  # a --seeds run: the spread over seeds per stage
        from workbench.results import read_csv

        rows = [{k: float(v) if k != "stage" and v not in ("", None) else v for k, v in r.items()}
                for r in read_csv(spread)]
        print(f"run {path.name}: {int(max(r['n'] for r in rows))} seeds (mean ± std per stage; per seed: {path / 'seeds.csv'})")
        print_table(spread_rows(rows), ["stage", ("n", "{:.0f}"), "accuracy", "macro_f1", "throughput_b1", "throughput_b8"])
        return 0
    if not metrics_file.exists():
        raise ConfigError(f"no run at '{args.run}' (looked for {metrics_file})")
    data = json.loads(metrics_file.read_text())
    print(f"run {data['run']}: model {data['model']} on {data['task']} "
          f"({'quick' if data.get('quick') else 'full'}, {data.get('eval_examples')} {data.get('split')} examples)")
    print_table(data["stages"])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from workbench.pipeline.eval_other import evaluate_run
    from workbench.results import STAGE_COLUMNS

    task: dict = {"name": args.task}
    if args.text_column:
        task["text_column"] = args.text_column
    if args.label_column:
        task["label_column"] = args.label_column
    if args.text_pair_column:
        task["text_pair_column"] = args.text_pair_column
    out, rows = evaluate_run(args.run, task, stage=args.stage, split=args.split)
    print(f"run {out.parent.name}: stages measured on {args.task} ({rows[0]['examples']} {args.split} examples); "
          f"run_accuracy: on the run's own task ({rows[0]['run_task']}, {rows[0]['run_split']} split)")
    print_table(rows, list(STAGE_COLUMNS[:4]) + [("run_accuracy", "{:.4f}")] + list(STAGE_COLUMNS[4:]))
    print(f"\nwritten: {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from workbench.export import export_stage

    r = export_stage(args.run, stage=args.stage, fmt=args.format, out=args.out, accuracy=args.accuracy)
    print(f"stage '{r.stage}' ({r.kind}) checked on {r.examples} validation texts: max |Δlogit| {r.max_abs_diff:.3g} "
          f"(allowed {r.bound:.3g}), argmax agreement {r.argmax_agreement:.3f} [{r.notes}]")
    print(f"written: {r.path}")
    a = r.accuracy
    if a is not None:
        print(f"accuracy on {a.examples} {a.split} examples: exported file {a.accuracy:.4f}, stage {a.stage_accuracy:.4f} "
              f"({a.accuracy - a.stage_accuracy:+.4f}); {a.disagreements} predictions differ, max |Δlogit| "
              f"{a.max_abs_diff:.3g}")
    return 0
