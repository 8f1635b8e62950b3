"""The structural-compression comparison: `workbench compare results/structural --structural`.

A structural run (`recipes/structural.yaml`, run with `--seeds`) names its stages
`<method>-<pct>` (`kwon-40`: the `kwon` method at 40% of the encoder's FLOPs removed) or
`<method>` for methods without a budget (`vocab`). From the run's `seeds.csv`, each stage's
pruning record (`model.config.workbench_pruning`: seconds, peak memory, FLOPs), and the
cross-engine `speed.csv` written by `workbench bench --run` (optional), this writes next to them:

* `summary.csv`: one row per stage: method, FLOPs removed, parameters, disk, accuracy and
  macro-F1 (mean and std over seeds, n), the drop against the teacher in points, the time the
  pruning took, its peak memory, and samples/s at batch 1 and 8 per engine with the speed-up over
  the unpruned teacher *on the same engine*;
* `table.md`: the same, readable, with whether the papers' claims held here;
* `accuracy_vs_throughput.png`: accuracy against our runtime's (or torch's) samples/s at batch 1.

The committed study keeps the run in `results/structural/run/` and the report one level up:
`workbench compare results/structural/run --structural --out results/structural`.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.results import atomic_write_text, format_stage_table, read_csv, write_csv

METHODS = {  # stage-name prefix -> what the row is (the check and the README quote these names)
    "teacher": "fine-tuned teacher (dense)",
    "kwon": "retraining-free (Kwon et al.), 2048 labelled, no training",
    "gradfree": "gradient-free (Nova et al.), unlabeled text, no labels or gradients",
    "magnitude": "magnitude-structured one-shot, no training",
    "gradual": "gradual Fisher-structured pruning under distillation",
    "vocab": "vocabulary trimming (Load What You Need)",
    "vocab+kwon": "vocabulary trimming + retraining-free (Kwon)",
}
# (method prefix, FLOPs removed the paper claims, accuracy points allowed, source)
CLAIMS = [("kwon", 0.50, 1.0, "Kwon et al.: up to 2x fewer FLOPs within 1% accuracy"),
          ("gradfree", 0.40, 4.0, "Nova et al.: up to 40% fewer FLOPs within 4% accuracy, no labels")]
ENGINE_COLUMNS = {"torch-fp32": "torch", "ort-int8": "ort_int8", "ort-fp32": "ort_fp32", "wb-int8": "wb_int8",
                  "wb-fp32": "wb_fp32"}


def split_stage(stage: str) -> tuple[str, float | None]:
    """`kwon-40` -> ("kwon", 0.4); `vocab` -> ("vocab", None)."""
    m = re.fullmatch(r"(.+?)-(\d+)", stage)
    return (m.group(1), int(m.group(2)) / 100.0) if m else (stage, None)


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _pruning_record(folder: Path, seed: str, stage: str) -> dict[str, Any]:
    cfg = folder / f"seed-{seed}" / "artifacts" / stage / "model" / "config.json"
    if not cfg.exists():
        return {}
    data = json.loads(cfg.read_text())
    return data.get("workbench_pruning") or data.get("workbench_vocab") or {}


def read_speed(path: Path) -> dict[tuple[str, str, int], float]:
    """(stage, engine, batch) -> samples/s from a `workbench bench --run` speed.csv."""
    out: dict[tuple[str, str, int], float] = {}
    if not path.exists():
        return out
    for r in read_csv(path):
        value = r.get("samples_per_s") or r.get("throughput")
        if value not in (None, ""):
            out[(r["stage"], r["engine"], int(float(r["batch"])))] = float(value)
    return out


def summarize(folder: Path) -> list[dict[str, Any]]:
    seeds_csv = folder / "seeds.csv"
    if not seeds_csv.exists():
        raise ConfigError(f"{folder} has no seeds.csv: run `workbench run recipes/structural.yaml --seeds 0,1,2` first")
    raw = read_csv(seeds_csv)
    speed = read_speed(folder / "speed.csv")
    stages: dict[str, list[dict[str, Any]]] = {}
    for r in raw:
        stages.setdefault(r["stage"], []).append(r)
    teacher_acc = mean_std([float(r["accuracy"]) for r in stages.get("teacher", [])])[0]
    rows = []
    for stage, rs in stages.items():
        method, budget = split_stage(stage)
        if method not in METHODS:
            continue  # helper stages (e.g. a runtime stage) are not rows
        records = [_pruning_record(folder, r["seed"], stage) for r in rs]
        acc = mean_std([float(r["accuracy"]) for r in rs])
        f1 = mean_std([float(r["macro_f1"]) for r in rs])
        num = lambda key: [float(r[key]) for r in rs if r.get(key) not in (None, "")]  # noqa: E731
        rec = lambda key: [float(p[key]) for p in records if p.get(key) is not None]  # noqa: E731
        row: dict[str, Any] = {
            "stage": stage, "method": METHODS[method], "flops_target": budget,
            "flops_removed": mean_std(num("flops_removed") or rec("flops_removed") or [0.0])[0],
            "params": mean_std(num("params"))[0], "disk_mb": mean_std(num("disk_mb"))[0],
            "n_seeds": len(rs), "mean_accuracy": acc[0], "std_accuracy": acc[1],
            "mean_macro_f1": f1[0], "std_macro_f1": f1[1],
            "drop_points": 100.0 * (teacher_acc - acc[0]),
            "pruning_seconds": mean_std(num("pruning_seconds") or rec("pruning_seconds"))[0],
            "train_seconds": mean_std(num("train_seconds"))[0],
            # ru_maxrss is the whole process's peak (all stages run before, too): the smallest over
            # the seeds' processes is the tightest upper bound of what the method itself needed
            "peak_rss_mb": min(rec("peak_rss_mb"), default=float("nan")),
        }
        for engine, col in ENGINE_COLUMNS.items():
            for batch in (1, 8):
                v = speed.get((stage, engine, batch))
                base = speed.get(("teacher", engine, batch))
                if v is not None:
                    row[f"{col}_b{batch}"] = v
                    row[f"{col}_b{batch}_speedup"] = v / base if base else float("nan")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{seeds_csv}: no stage is named after a structural method ({', '.join(METHODS)})")
    return rows


def claims(rows: list[dict[str, Any]]) -> list[str]:
    """One line per paper claim: the largest FLOPs cut within the allowed drop, and whether it held."""
    lines = []
    for prefix, flops, points, source in CLAIMS:
        mine = [r for r in rows if split_stage(r["stage"])[0] == prefix]
        if not mine:
            lines.append(f"- {source}: not run here.")
            continue
        ok = [r for r in mine if r["drop_points"] <= points]
        best = max(ok, key=lambda r: r["flops_removed"]) if ok else None
        if best is None:
            lines.append(f"- {source}: **did not hold**: every budget lost more than {points:g} points.")
            continue
        held = best["flops_removed"] >= flops - 0.01
        lines.append(f"- {source}: {'**held**' if held else '**held only in part**'}: "
                     f"{100 * best['flops_removed']:.0f}% of the FLOPs removed at "
                     f"{best['drop_points']:+.2f} points ({best['stage']}, mean of {best['n_seeds']} seeds).")
    return lines


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    from workbench.plots.runs import plt, save_figure

    key = "wb_int8_b1" if any("wb_int8_b1" in r for r in rows) else None
    fig, ax = plt.subplots(figsize=(8, 5))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["method"], []).append(r)
    for method, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["flops_removed"])
        xs = [r.get(key, float("nan")) if key else 1.0 / max(1e-9, 1.0 - r["flops_removed"]) for r in rs]
        ax.errorbar(xs, [100 * r["mean_accuracy"] for r in rs], yerr=[100 * r["std_accuracy"] for r in rs],
                    fmt="o-", capsize=3, label=method)
        for x, r in zip(xs, rs):
            ax.annotate(r["stage"], (x, 100 * r["mean_accuracy"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=7)
    ax.set_xlabel("samples/s on the workbench runtime (int8, batch 1, seq 128)" if key
                  else "FLOPs speed-up (1 / (1 - FLOPs removed))")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.set_title("structural compression of the fine-tuned MiniLM-L6 (rt-sentiment)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return save_figure(fig, path)


def structural_report(folder: Path, out: Path | None = None) -> list[dict[str, Any]]:
    """Write summary.csv, table.md and accuracy_vs_throughput.png for the structural run in
    `folder` into `out` (default: the run's folder). summary.csv has no empty cell ("-" where a
    value does not apply), so it reads back into one table with any tool."""
    folder = Path(folder)
    rows = summarize(folder)
    folder = Path(out) if out is not None else folder
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    write_csv(folder / "summary.csv", [{k: "-" if r.get(k) is None or r.get(k) != r.get(k) else r[k]
                                        for k in columns} for r in rows], columns)
    shown = []
    for r in rows:
        cell = {"stage": r["stage"], "flops": f"{r['flops_removed']:.0%}", "params": f"{r['params'] / 1e6:.1f}M",
                "disk": f"{r['disk_mb']:.1f}", "acc": f"{r['mean_accuracy']:.4f} ± {r['std_accuracy']:.4f}",
                "f1": f"{r['mean_macro_f1']:.4f}", "n": r["n_seeds"], "drop": f"{r['drop_points']:+.2f}"}
        for key, fmt in (("pruning_seconds", "{:.0f}"), ("train_seconds", "{:.0f}"), ("peak_rss_mb", "{:.0f}")):
            cell[key] = fmt.format(r[key]) if r.get(key) == r.get(key) and r.get(key) is not None else "-"
        for col in ("torch", "ort_int8", "wb_int8"):
            for b in (1, 8):
                v, x = r.get(f"{col}_b{b}"), r.get(f"{col}_b{b}_speedup")
                cell[f"{col}_b{b}"] = f"{v:.1f} ({x:.2f}x)" if v is not None else "-"
        shown.append(cell)
    cols = [("stage", None, "stage"), ("flops", None, "FLOPs removed"), ("params", None, "params"),
            ("disk", None, "disk MB"), ("acc", None, "test accuracy (mean ± std)"), ("f1", None, "macro-F1"),
            ("n", None, "seeds"), ("drop", None, "drop (pts)"), ("pruning_seconds", None, "pruning s"),
            ("train_seconds", None, "training s"), ("peak_rss_mb", None, "peak RSS MB (≤)")]
    cols += [(f"{col}_b{b}", None, f"{name} b{b}") for col, name in
             (("torch", "torch fp32"), ("ort_int8", "ORT int8"), ("wb_int8", "ours int8")) for b in (1, 8)]
    table = format_stage_table(shown, cols, fmt="markdown")
    legend = "\n".join(f"- `{k}`: {v}" for k, v in METHODS.items())
    atomic_write_text(folder / "table.md", "# Structural compression\n\n" + table + "\n\nStages:\n" + legend +
                      "\n\nSamples/s at sequence length 128 (speed-up over the dense teacher *on the same "
                      "engine*), each engine in a fresh process, all in one `workbench bench --run` call "
                      "(speed.csv: threads, ISA, load average). Peak RSS is the pruning process's peak, an upper "
                      "bound (it includes the stages run before in the same process). FLOPs are the encoder's MACs at the "
                      "training texts' mean length (~27 tokens), where the FFN dominates.\n\n## The papers' claims, here\n\n" + "\n".join(claims(rows)) + "\n")
    plot(rows, folder / "accuracy_vs_throughput.png")
    return rows
