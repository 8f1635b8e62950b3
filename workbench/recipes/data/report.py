"""The keep reports of a run, next to what the students did:
`python -m workbench.recipes.data.report RUN` (a run folder, or a `--seeds` folder of seed-<s> runs).

Writes `<RUN>/keep.csv` (one row per pseudo-label stage and seed: kept/total, the accuracy of the
kept and of all pseudo-labels against gold, the student's test accuracy) and `<RUN>/keep.md`
(per stage, the means over seeds, with the gold-label and KD stages of the run for reference).
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from workbench.results import atomic_write_text, format_stage_table, read_csv, write_csv

COLUMNS = ["stage", "seed", "filter", "kept", "total", "kept_fraction", "kept_accuracy", "pool_accuracy", "accuracy"]


def _runs(folder: Path) -> list[tuple[Any, Path]]:
    seeds = sorted(folder.glob("seed-*/"), key=lambda p: p.name)
    if seeds:
        return [(int(p.name.split("-", 1)[1]), p) for p in seeds]
    return [("", folder)]


def keep_rows(folder: Path) -> list[dict[str, Any]]:
    """One row per (pseudo-label stage, seed), with the stage's test accuracy."""
    rows = []
    for seed, run in _runs(Path(folder)):
        accuracy = {r["stage"]: float(r["accuracy"]) for r in read_csv(run / "stages.csv")} \
            if (run / "stages.csv").exists() else {}
        for path in sorted((run / "pseudo_labels").glob("*.json")):
            r = json.loads(path.read_text())
            rows.append({**{k: r.get(k) for k in COLUMNS}, "seed": seed, "accuracy": accuracy.get(r["stage"])})
    return rows


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v not in (None, "")]
    return statistics.fmean(vals) if vals else None


def keep_table(folder: Path) -> list[dict[str, Any]]:
    """Write keep.csv and keep.md in `folder`; returns the per-stage table."""
    folder = Path(folder)
    rows = keep_rows(folder)
    if not rows:
        raise SystemExit(f"{folder}: no keep reports (<run>/pseudo_labels/*.json); run a pseudo_label recipe first")
    write_csv(folder / "keep.csv", rows, COLUMNS)
    table = []
    for stage in dict.fromkeys(r["stage"] for r in rows):
        rs = [r for r in rows if r["stage"] == stage]
        acc = [r["accuracy"] for r in rs if r["accuracy"] is not None]
        table.append({"stage": stage, "filter": rs[0]["filter"], "n": len(rs),
                      "kept": f"{_mean([r['kept'] for r in rs]):.0f}/{rs[0]['total']}",
                      "kept_fraction": _mean([r["kept_fraction"] for r in rs]),
                      "kept_label_accuracy": _mean([r["kept_accuracy"] for r in rs]),
                      "all_label_accuracy": _mean([r["pool_accuracy"] for r in rs]),
                      "test_accuracy": f"{statistics.fmean(acc):.4f} ± {statistics.stdev(acc) if len(acc) > 1 else 0:.4f}"
                      if acc else "-"})
    atomic_write_text(folder / "keep.md", "Pseudo-labels kept per stage (mean over seeds); label accuracy: "
                      "the pseudo-labels against the hidden gold labels; test accuracy: the student trained on "
                      "the kept ones (mean ± std).\n\n" + format_stage_table(
                          table, ["stage", "filter", ("n", "{}"), "kept", ("kept_fraction", "{:.3f}"),
                                  ("kept_label_accuracy", "{:.4f}"), ("all_label_accuracy", "{:.4f}"),
                                  "test_accuracy"], fmt="markdown") + "\n")
    return table


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m workbench.recipes.data.report RUN_FOLDER")
    keep_table(Path(sys.argv[1]))
    print((Path(sys.argv[1]) / "keep.md").read_text())
