"""Figures for one pipeline run."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from workbench.results import atomic_write_bytes  # noqa: E402


def save_figure(fig: Any, path: Path, dpi: int = 130) -> Path:
    """Write `fig` as a PNG at `path` atomically (a reader never sees half a file) and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def accuracy_vs_throughput(stages: list[dict[str, Any]], path: Path, title: str = "",
                           batch: int = 1) -> Path:
    """Test accuracy against samples/s (seq 128, batch `batch`), one labelled point per stage,
    marker area proportional to the model's non-zero parameters; a stage flagged `degenerate`
    (one class for everything, or chance-level macro-F1) is a red x, "(degenerate)" in its label."""
    key = f"throughput_b{batch}"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = [s for s in stages if s.get(key) and s.get("accuracy") is not None]
    biggest = max((s.get("nonzero_params") or 1 for s in pts), default=1)
    for s in pts:
        size = 40 + 400 * (s.get("nonzero_params") or 0) / biggest
        label = f"{s['stage']} ({s.get('engine', 'torch')})"
        if s.get("degenerate"):
            ax.scatter(s[key], s["accuracy"], s=size, marker="x", color="red", linewidths=2,
                       label=f"{label} (degenerate)")
        else:
            ax.scatter(s[key], s["accuracy"], s=size, alpha=0.7, label=label)
        ax.annotate(s["stage"], (s[key], s["accuracy"]), textcoords="offset points", xytext=(6, 6), fontsize=9)
    if len(pts) > 1:
        ax.plot([s[key] for s in pts], [s["accuracy"] for s in pts], "k:", lw=0.8, alpha=0.5)
    ax.set_xlabel(f"throughput (samples/s, seq 128, batch {batch})")
    ax.set_ylabel("test accuracy")
    ax.set_title(title or "accuracy vs throughput")
    ax.grid(alpha=0.3)
    if pts:
        ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def _short(name: str) -> str:
    """'bert.encoder.layer.2.attention.self.query' -> 'L2 query'."""
    import re

    m = re.search(r"layers?\.(\d+)\.(.*)", name)
    if not m:
        return name
    rest = m.group(2)
    for long, short in (("attention.self.", ""), ("attention.output.dense", "attn_out"),
                        ("intermediate.dense", "ffn_in"), ("output.dense", "ffn_out"), ("attention.", "")):
        rest = rest.replace(long, short)
    return f"L{m.group(1)} {rest}"


def per_layer_sparsity_figure(stages: list[dict[str, Any]], title: str = "") -> Any:
    """Fraction of zero weights in every encoder Linear, one line per stage that has any zeros
    (from metrics.json's `per_layer_sparsity`). Returns the Figure."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    shown = 0
    for s in stages:
        pls = s.get("per_layer_sparsity") or {}
        if not pls or max(pls.values()) <= 0.001:
            continue
        names = list(pls)
        ax.plot(range(len(names)), [pls[n] for n in names], "o-", ms=3.5, lw=1,
                label=f"{s['stage']} ({s.get('engine', '')}, overall {s.get('sparsity', 0):.0%})")
        if shown == 0:
            step = max(1, len(names) // 36)
            ax.set_xticks(range(0, len(names), step))
            ax.set_xticklabels([_short(n) for n in names][::step], rotation=90, fontsize=7)
        shown += 1
    if not shown:
        ax.text(0.5, 0.5, "no stage has zero weights (nothing pruned)", ha="center", va="center",
                transform=ax.transAxes, color="gray")
    ax.set_xlabel("encoder layer (Linear weight)")
    ax.set_ylabel("fraction of zero weights")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "per-layer sparsity")
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(fontsize=8, loc="best")
    return fig


def stage_waterfall_figure(stages: list[dict[str, Any]], title: str = "", batch: int = 1) -> Any:
    """Non-zero parameters, batch-`batch` latency and accuracy through a pipeline's stages, each
    bar labelled with its change from the stage before. Returns the Figure."""
    names = [s["stage"] for s in stages]
    panels = [("nonzero_params", "non-zero parameters (M)", 1e-6, "{:.1f}M"),
              (f"latency_ms_b{batch}", f"latency, batch {batch} (ms)", 1.0, "{:.1f}"),
              ("accuracy", "test accuracy", 1.0, "{:.3f}")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, (key, label, scale, fmt) in zip(axes, panels):
        vals = [(s.get(key) * scale) if s.get(key) is not None else 0.0 for s in stages]
        colors = ["tab:blue"] + ["tab:green" if (v <= p if key != "accuracy" else v >= p) else "tab:red"
                                 for p, v in zip(vals, vals[1:])]
        ax.bar(range(len(vals)), vals, color=colors, alpha=0.8)
        for i, v in enumerate(vals):
            text = fmt.format(v)
            if i and vals[i - 1]:
                text += f"\n({(v - vals[i - 1]) / vals[i - 1]:+.0%})"
            ax.annotate(text, (i, v), textcoords="offset points", xytext=(0, 2), ha="center", va="bottom",
                        fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel("stage")
        ax.set_ylabel(label)
        ax.margins(y=0.25)
        if key == "accuracy" and vals and min(vals) > 0.3:
            ax.set_ylim(max(0.0, min(vals) - 0.1), min(1.0, max(vals) + 0.08))
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title or "stage waterfall")
    fig.tight_layout()
    return fig


def per_layer_sparsity(stages: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    return save_figure(per_layer_sparsity_figure(stages, title), path)


def stage_waterfall(stages: list[dict[str, Any]], path: Path, title: str = "", batch: int = 1) -> Path:
    return save_figure(stage_waterfall_figure(stages, title, batch), path)
