"""Figures for one pipeline run."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from workbench.results import atomic_write_bytes  # noqa: E402


def save_figure(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def accuracy_vs_throughput(stages: list[dict[str, Any]], path: Path, title: str = "",
                           batch: int = 1) -> Path:
    """Test accuracy against samples/s (seq 128, batch `batch`), one labelled point per stage,
    marker area proportional to the model's non-zero parameters."""
    key = f"throughput_b{batch}"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = [s for s in stages if s.get(key) and s.get("accuracy") is not None]
    biggest = max((s.get("nonzero_params") or 1 for s in pts), default=1)
    for s in pts:
        size = 40 + 400 * (s.get("nonzero_params") or 0) / biggest
        ax.scatter(s[key], s["accuracy"], s=size, alpha=0.7, label=f"{s['stage']} ({s.get('engine', 'torch')})")
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
