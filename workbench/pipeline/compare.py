"""Method comparisons from a multi-seed run: `workbench compare results/<name>`.

A comparison pipeline names its result stages `<student>.<method>` (e.g. `copy3.tinybert`);
stages without a dot (the teacher, the first half of a two-stage method) are steps, not rows.
From the run's `seeds.csv` this writes, next to it:

* `summary.csv`: one row per (method, student, seed): accuracy, macro-F1, throughput;
* `table.md`: per (student, method) the mean ± std over seeds and the 95% interval of the mean,
  the gap to the best method of that student, the share of the teacher's accuracy kept, the mean
  non-zero parameters, and how many seeds were flagged degenerate;
* `methods.png`: mean test accuracy per method and student with ±1 std error bars.

Methods run in separate runs from the same starting models (e.g. `recipes/movement_soft.yaml`
beside `recipes/movement.yaml`, sharing their cached teacher and student) join one table with
`--with OTHER_RUN`: every step stage the runs share must have scored the same accuracy on every
seed (then it is the same model), or nothing is written. Each joined row names its run, since
speed is only comparable within one run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from workbench.config import ConfigError
from workbench.pipeline.seeds import SPREAD_METRICS, aggregate
from workbench.results import atomic_write_text, format_stage_table, read_csv, write_csv

COLUMNS = ["method", "student", "seed", "accuracy", "macro_f1", "throughput_b1", "throughput_b8",
           "nonzero_params", "train_seconds", "degenerate"]


def method_rows(seed_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in seed_rows:
        if "." not in r["stage"]:
            continue
        student, method = r["stage"].split(".", 1)
        out.append({**r, "student": student, "method": method})
    return out


def _seed_rows(folder: Path) -> list[dict[str, Any]]:
    seeds_csv = Path(folder) / "seeds.csv"
    if not seeds_csv.exists():
        raise ConfigError(f"{folder} has no seeds.csv: run the pipeline with --seeds first")
    return read_csv(seeds_csv)


def check_same_start(folder: Path, raw: list[dict[str, Any]], other: Path, other_raw: list[dict[str, Any]]) -> None:
    """Fail unless `other`'s rows can join `folder`'s table: the same seeds, no method stage in
    both, and at least one shared step stage (no dot: teacher, student) whose accuracy is equal on
    every seed -- the sign that both runs started their methods from the same models."""
    seeds, other_seeds = {r["seed"] for r in raw}, {r["seed"] for r in other_raw}
    if seeds != other_seeds:
        raise ConfigError(f"compare --with {other}: its seeds ({', '.join(sorted(other_seeds))}) differ from "
                          f"{folder}'s ({', '.join(sorted(seeds))})")
    both = {r["stage"] for r in raw} & {r["stage"] for r in other_raw}
    methods = sorted(s for s in both if "." in s)
    if methods:
        raise ConfigError(f"compare --with {other}: method stage(s) {', '.join(methods)} are in both runs; "
                          "rename one run's stages")
    if not both:
        raise ConfigError(f"compare --with {other}: it shares no step stage (e.g. teacher, student) with {folder}, "
                          "so nothing shows its methods started from the same models")
    accuracy = {(r["seed"], r["stage"]): r["accuracy"] for r in raw}
    for r in other_raw:
        if r["stage"] not in both:
            continue
        here = accuracy.get((r["seed"], r["stage"]))
        if here is None:
            raise ConfigError(f"compare --with {other}: stage '{r['stage']}' has no row for seed {r['seed']} in "
                              f"{folder}, so nothing shows both runs started seed {r['seed']} from the same model")
        if float(r["accuracy"]) != float(here):
            raise ConfigError(f"compare --with {other}: stage '{r['stage']}' of seed {r['seed']} scored "
                              f"{float(r['accuracy']):.6f} there and {float(here):.6f} in {folder}: not the "
                              "same model, so the methods did not start from the same place")


def compare(folder: Path, others: Sequence[Path] = ()) -> list[dict[str, Any]]:
    """Write summary.csv, table.md and methods.png for the multi-seed run in `folder`, with the
    method rows of the runs in `others` joined (`check_same_start`)."""
    raw = _seed_rows(folder)
    joined = [(Path(o), _seed_rows(o)) for o in others]
    for other, other_raw in joined:  # every run is checked before anything is written
        check_same_start(Path(folder), raw, other, other_raw)
    write_csv(Path(folder) / "seeds_summary.csv", aggregate(raw))  # per stage, in the current format
    rows = method_rows(raw)
    if not rows:
        raise ConfigError(f"{Path(folder) / 'seeds.csv'}: no stage is named '<student>.<method>'")
    for r in rows:
        r["run"] = "."
    for other, other_raw in joined:
        label = os.path.relpath(other, folder)  # e.g. 'soft' for a run kept inside this folder
        rows += [{**r, "run": label} for r in method_rows(other_raw)]
    write_csv(Path(folder) / "summary.csv", rows, COLUMNS + (["run"] if joined else []))
    teacher = [float(r["accuracy"]) for r in raw if r["stage"] == "teacher"]
    teacher_acc = sum(teacher) / len(teacher) if teacher else None
    for r in rows:
        r["group"] = f"{r['student']}.{r['method']}"
    summary = aggregate(rows, SPREAD_METRICS + ("nonzero_params",), by="group")
    best: dict[str, float] = {}
    for s in summary:
        student = s["group"].split(".", 1)[0]
        best[student] = max(best.get(student, 0.0), s["mean_accuracy"])
    table = []
    flagged, runs = {}, {}
    for r in rows:
        flagged[r["group"]] = flagged.get(r["group"], 0) + bool(r.get("degenerate"))
        runs[r["group"]] = r["run"]
    for s in sorted(summary, key=lambda s: (s["group"].split(".")[0], -s["mean_accuracy"])):
        student, method = s["group"].split(".", 1)
        table.append({
            "run": runs[s["group"]],
            "flagged": f"{flagged[s['group']]}/{s['n']}",
            "student": student, "method": method, "n": s["n"],
            "accuracy": f"{s['mean_accuracy']:.4f} ± {s['std_accuracy']:.4f}",
            "ci95": f"± {s['ci95_accuracy']:.4f}",
            "macro_f1": f"{s['mean_macro_f1']:.4f} ± {s['std_macro_f1']:.4f}",
            "vs_best": f"{s['mean_accuracy'] - best[student]:+.4f}",
            "of_teacher": f"{100 * s['mean_accuracy'] / teacher_acc:.1f}%" if teacher_acc else "-",
            "nonzero": f"{s['mean_nonzero_params'] / 1e6:.2f}M" if "mean_nonzero_params" in s else "-",
            "throughput_b1": f"{s['mean_throughput_b1']:.1f}" if "mean_throughput_b1" in s else "-",
        })
    head = (f"Test accuracy over {max(s['n'] for s in summary)} seeds (mean ± std; ci95: half-width of the "
            f"95% interval of the mean)" + (f"; teacher {teacher_acc:.4f}" if teacher_acc else "") + ".\n\n")
    columns = ["student", "method", ("n", "{}"), "accuracy", "ci95", "macro_f1", "vs_best", "of_teacher",
               "nonzero", "throughput_b1", "flagged"] + (["run"] if joined else [])
    notes = ("\nnonzero: mean non-zero parameters of the stage's model (pruning lowers it; a method whose sparsity "
             "follows from its settings, e.g. soft movement, reaches its own).\n"
             "flagged: seeds whose stage predicted one class for everything or was no better than chance "
             "(flagged by the run; they are included in the mean).\n")
    if joined:
        notes += ("run: where the row's stages ran ('.' this folder); each joined run's shared steps scored the same "
                  "accuracy here on every seed. Compare throughput only between rows of one run.\n")
    atomic_write_text(Path(folder) / "table.md", head + format_stage_table(table, columns, fmt="markdown") + "\n" + notes)
    _plot(summary, Path(folder) / "methods.png", teacher_acc)
    return table


def _plot(summary: list[dict[str, Any]], path: Path, teacher_acc: float | None) -> None:
    from workbench.plots.runs import plt, save_figure

    students = sorted({s["group"].split(".", 1)[0] for s in summary})
    methods = sorted({s["group"].split(".", 1)[1] for s in summary})
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(methods) * len(students)), 4.5))
    width = 0.8 / max(1, len(students))
    for j, student in enumerate(students):
        xs, ys, es = [], [], []
        for i, m in enumerate(methods):
            s = next((s for s in summary if s["group"] == f"{student}.{m}"), None)
            if s is not None:
                xs.append(i + j * width)
                ys.append(s["mean_accuracy"])
                es.append(s["std_accuracy"])
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=student, alpha=0.8)
    if teacher_acc:
        ax.axhline(teacher_acc, color="k", ls="--", lw=1, label=f"teacher {teacher_acc:.3f}")
    ax.set_xticks([i + width * (len(students) - 1) / 2 for i in range(len(methods))])
    ax.set_xticklabels(methods, rotation=30, ha="right")
    lo = min(s["mean_accuracy"] - s["std_accuracy"] for s in summary)
    ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max((teacher_acc or 0), *(s["mean_accuracy"] for s in summary)) + 0.03))
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title("distillation methods by student")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
