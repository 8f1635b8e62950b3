"""Method comparisons from a multi-seed run: `workbench compare results/<name>`.

A comparison pipeline names its result stages `<student>.<method>` (e.g. `copy3.tinybert`);
stages without a dot (the teacher, the first half of a two-stage method) are steps, not rows.
From the run's `seeds.csv` this writes, next to it:

* `summary.csv`: one row per (method, student, seed): accuracy, macro-F1, throughput;
* `table.md`: per (student, method) the mean ± std over seeds and the 95% interval of the mean,
  the gap to the best method of that student, the share of the teacher's accuracy kept, and how
  many seeds were flagged degenerate;
* `methods.png`: mean test accuracy per method and student with ±1 std error bars.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.pipeline.seeds import aggregate
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


def compare(folder: Path) -> list[dict[str, Any]]:
    """Write summary.csv, table.md and methods.png for the multi-seed run in `folder`."""
    seeds_csv = Path(folder) / "seeds.csv"
    if not seeds_csv.exists():
        raise ConfigError(f"{folder} has no seeds.csv: run the pipeline with --seeds first")
    raw = read_csv(seeds_csv)
    write_csv(Path(folder) / "seeds_summary.csv", aggregate(raw))  # per stage, in the current format
    rows = method_rows(raw)
    if not rows:
        raise ConfigError(f"{seeds_csv}: no stage is named '<student>.<method>'")
    write_csv(Path(folder) / "summary.csv", rows, COLUMNS)
    teacher = [float(r["accuracy"]) for r in raw if r["stage"] == "teacher"]
    teacher_acc = sum(teacher) / len(teacher) if teacher else None
    for r in rows:
        r["group"] = f"{r['student']}.{r['method']}"
    summary = aggregate(rows, by="group")
    best: dict[str, float] = {}
    for s in summary:
        student = s["group"].split(".", 1)[0]
        best[student] = max(best.get(student, 0.0), s["mean_accuracy"])
    table = []
    flagged = {}
    for r in rows:
        flagged[r["group"]] = flagged.get(r["group"], 0) + bool(r.get("degenerate"))
    for s in sorted(summary, key=lambda s: (s["group"].split(".")[0], -s["mean_accuracy"])):
        student, method = s["group"].split(".", 1)
        table.append({
            "flagged": f"{flagged[s['group']]}/{s['n']}",
            "student": student, "method": method, "n": s["n"],
            "accuracy": f"{s['mean_accuracy']:.4f} ± {s['std_accuracy']:.4f}",
            "ci95": f"± {s['ci95_accuracy']:.4f}",
            "macro_f1": f"{s['mean_macro_f1']:.4f} ± {s['std_macro_f1']:.4f}",
            "vs_best": f"{s['mean_accuracy'] - best[student]:+.4f}",
            "of_teacher": f"{100 * s['mean_accuracy'] / teacher_acc:.1f}%" if teacher_acc else "-",
            "throughput_b1": f"{s['mean_throughput_b1']:.1f}" if "mean_throughput_b1" in s else "-",
        })
    head = (f"Test accuracy over {max(s['n'] for s in summary)} seeds (mean ± std; ci95: half-width of the "
            f"95% interval of the mean)" + (f"; teacher {teacher_acc:.4f}" if teacher_acc else "") + ".\n\n")
    atomic_write_text(Path(folder) / "table.md", head + format_stage_table(
        table, ["student", "method", ("n", "{}"), "accuracy", "ci95", "macro_f1", "vs_best", "of_teacher",
                "throughput_b1", "flagged"], fmt="markdown") + "\n"
        + "\nflagged: seeds whose stage predicted one class for everything or was no better than chance "
          "(flagged by the run; they are included in the mean).\n")
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
