"""Figures for runs repeated over seeds: means with their spread."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from workbench.plots.runs import plt, save_figure


def spread_plot(summary: list[dict[str, Any]], path: Path, title: str = "", batch: int = 1,
                label: str = "stage") -> Path:
    """Mean test accuracy against mean samples/s per group, with ±1 std error bars on both axes
    (n seeds in the legend)."""
    key = f"throughput_b{batch}"
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for row in summary:
        if f"mean_{key}" not in row or "mean_accuracy" not in row:
            continue
        ax.errorbar(row[f"mean_{key}"], row["mean_accuracy"], xerr=row.get(f"std_{key}", 0.0),
                    yerr=row.get("std_accuracy", 0.0), fmt="o", capsize=3,
                    label=f"{row[label]} (n={row['n']})")
        ax.annotate(str(row[label]), (row[f"mean_{key}"], row["mean_accuracy"]), textcoords="offset points",
                    xytext=(6, 6), fontsize=8)
    xs = [r[f"mean_{key}"] for r in summary if f"mean_{key}" in r]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(f"throughput (samples/s, seq 128, batch {batch}), mean ± std")
    ax.set_ylabel("test accuracy, mean ± std")
    ax.set_title(title or "accuracy vs throughput over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def loss_terms_plot(histories: dict[str, list[dict[str, Any]]], path: Path, title: str = "") -> Path:
    """Per-term training curves, one panel per stage (`history.csv` rows: step and each term)."""
    n = max(1, len(histories))
    cols = min(3, n)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(5 * cols, 3.4 * math.ceil(n / cols)), squeeze=False)
    for ax, (stage, rows) in zip(axes.flat, histories.items()):
        terms = [k for k in rows[0] if k not in ("step", "epoch", "lr") and not k.startswith("val_")] if rows else []
        steps = [float(r["step"]) for r in rows]
        for term in terms:
            vals = [float(r[term]) if r.get(term) not in (None, "") else math.nan for r in rows]
            ax.plot(steps, vals, lw=1.0, label=term, alpha=0.85)
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_yscale("log") if all(float(r.get("loss") or 1) > 0 for r in rows) else None
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(histories):]:
        ax.axis("off")
    fig.suptitle(title or "loss terms")
    fig.tight_layout()
    return save_figure(fig, path)
