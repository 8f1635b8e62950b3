"""Figures for a sweep: the accuracy/throughput Pareto front and parameter importance."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from workbench.plots.runs import plt, save_figure


def pareto_indices(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both coordinates (both maximised)."""
    out = []
    for i, (a, t) in enumerate(points):
        if not any((a2 >= a and t2 >= t) and (a2 > a or t2 > t) for j, (a2, t2) in enumerate(points) if j != i):
            out.append(i)
    return out


PEER_ENGINES = ("torch-fp32", "torch-int8-x86", "ort-fp32", "ort-int8", "wb-int8", "wb-int8-sp80")


def read_peers(path: Path | str | None = None, seq_len: int | None = None, model: str = "minilm",
               batch: int = 1, threads: int | None = None,
               engines: tuple[str, ...] | None = PEER_ENGINES) -> list[dict[str, Any]]:
    """Reference engines from `workbench bench` (results/bench/engines.csv): rows with status ok
    for `model` at `batch` (and `seq_len`, `threads` when given; `threads` falls back to all when
    no row matches), limited to `engines` (None: all). [] when the file is absent."""
    path = Path(path or Path("results") / "bench" / "engines.csv")
    if not path.is_file():
        return []
    peers = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            try:
                if (r.get("status") != "ok" or r.get("model") != model or int(r.get("batch") or 0) != batch
                        or (seq_len is not None and int(r.get("seq_len") or 0) != seq_len)):
                    continue
                if engines is not None and r["engine"] not in engines:
                    continue
                peers.append({"engine": r["engine"], "threads": int(r.get("threads") or 0),
                              "seq_len": int(r.get("seq_len") or 0), "throughput": float(r["samples_per_s"])})
            except (KeyError, ValueError):
                continue
    if threads is not None and any(p["threads"] == threads for p in peers):
        peers = [p for p in peers if p["threads"] == threads]
    return peers


def _num(v: Any) -> float | None:
    """A finite float from a number or a CSV cell; None otherwise."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _draw_trial_peers(ax: Any, trial_peers: list[dict[str, Any]], pts: list[dict[str, Any]]) -> list[float]:
    """Each front trial's own model on the peer engines: one marker per engine, joined to its
    trial's point by a dotted line and labelled with the trial number. Returns their throughputs."""
    by_trial = {str(t.get("number")): t for t in pts}
    engines = list(dict.fromkeys(str(r.get("engine")) for r in trial_peers))
    xs = []
    for j, engine in enumerate(engines):
        color, marker = plt.cm.tab10((j + 2) % 10), "s^DvPX"[j % 6]
        got = [(r, _num(r.get("samples_per_s")), _num(r.get("val_accuracy"))) for r in trial_peers
               if str(r.get("engine")) == engine and r.get("status", "ok") == "ok"]
        got = [(r, x, y) for r, x, y in got if x and y is not None]
        if not got:
            continue
        ax.scatter([x for _, x, _ in got], [y for _, _, y in got], marker=marker, s=45, color=color,
                   edgecolors="k", linewidths=0.5, zorder=4, label=f"{engine} (the trial's own model)")
        for r, x, y in got:
            xs.append(x)
            t = by_trial.get(str(r.get("trial")))
            if t is not None:
                ax.plot([t["throughput"], x], [t["accuracy"], y], ":", color=color, lw=0.9, zorder=3)
            ax.annotate(str(r.get("trial")), (x, y), textcoords="offset points", xytext=(3, -9), fontsize=6,
                        color=color)
    return xs


def pareto_figure(trials: list[dict[str, Any]], teacher: dict[str, Any] | None = None,
                  peers: list[dict[str, Any]] | None = None, title: str = "", seq_len: int | None = None,
                  trial_peers: list[dict[str, Any]] | None = None, ylabel: str = "accuracy") -> Any:
    """Accuracy against batch-1 throughput, one point per finished trial, the Pareto front joined.

    trials: dicts with number, accuracy, throughput (and optionally state). teacher: a stage's
    metrics (accuracy, throughput_b1) drawn as a star. peers: from `read_peers`, drawn as vertical
    lines (the bench runs them on another model, so only their throughput is a reference).
    trial_peers: rows of `workbench.sweep.peers` (trial, engine, samples_per_s, val_accuracy): the
    front trials' own models on the peer engines, drawn as points joined to their trial."""
    fig, ax = plt.subplots(figsize=(8, 5))
    pts = [t for t in trials if t.get("accuracy") is not None and t.get("throughput") is not None
           and math.isfinite(t["accuracy"]) and math.isfinite(t["throughput"])]
    front = [pts[i] for i in pareto_indices([(t["accuracy"], t["throughput"]) for t in pts])]
    front_ids = {id(t) for t in front}
    others = [t for t in pts if id(t) not in front_ids]
    if others:
        ax.scatter([t["throughput"] for t in others], [t["accuracy"] for t in others], c="tab:gray", alpha=0.6,
                   s=30, label="trial")
    if front:
        front.sort(key=lambda t: t["throughput"])
        ax.plot([t["throughput"] for t in front], [t["accuracy"] for t in front], "o-", c="tab:red", ms=7,
                lw=1.2, label="Pareto front")
    for t in pts:
        ax.annotate(str(t.get("number", "")), (t["throughput"], t["accuracy"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=7, color="tab:red" if id(t) in front_ids else "tab:gray")
    if teacher and teacher.get("accuracy") is not None and teacher.get("throughput_b1"):
        ax.scatter([teacher["throughput_b1"]], [teacher["accuracy"]], marker="*", s=220, c="gold",
                   edgecolors="k", zorder=5, label=f"teacher ({teacher.get('engine', 'torch-fp32')})")
    for i, p in enumerate(peers or []):
        color = plt.cm.tab10((i + 2) % 10)
        ax.axvline(p["throughput"], ls=":", lw=1.2, color=color,
                   label=f"{p['engine']} (bench, {p['threads']} thr, seq {p['seq_len']})")
    xs = [t["throughput"] for t in pts if t["throughput"] > 0] + [p["throughput"] for p in peers or []] + (
        [teacher["throughput_b1"]] if teacher and teacher.get("throughput_b1") else [])
    xs += _draw_trial_peers(ax, trial_peers or [], pts)
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")  # runtimes spanning orders of magnitude
    ax.set_xlabel("throughput (samples/s, batch 1" + (f", seq {seq_len}" if seq_len else "") + ")")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "accuracy vs throughput")
    ax.grid(alpha=0.3)
    if not pts:
        ax.text(0.5, 0.5, "no finished trials yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="best")
    return fig


def param_importances(study: Any) -> tuple[dict[str, dict[str, float]], str | None]:
    """{objective: {param: importance}} by fANOVA, or ({}, why) when it cannot be computed."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return {}, f"parameter importance needs >= 2 complete trials (have {len(done)})"
    varying = {k for k in {k for t in done for k in t.params} if len({repr(t.params.get(k)) for t in done}) > 1}
    if not varying:
        return {}, "no parameter took more than one value among the complete trials"
    import optuna

    names = study.user_attrs.get("objectives") or [f"objective {i}" for i in range(len(study.directions))]
    out: dict[str, dict[str, float]] = {}
    try:
        for i, name in enumerate(names):
            out[name] = optuna.importance.get_param_importances(
                study, target=(lambda t, i=i: t.values[i]) if len(study.directions) > 1 else None,
                evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except Exception as exc:  # e.g. dynamic search spaces Optuna's evaluators reject
        return {}, f"parameter importance failed: {type(exc).__name__}: {exc}"
    return out, None


def importance_figure(importances: dict[str, dict[str, float]], message: str | None = None, title: str = "") -> Any:
    """Horizontal bars: each parameter's importance for each objective (fANOVA, sums to 1)."""
    params = sorted({p for d in importances.values() for p in d},
                    key=lambda p: -max(d.get(p, 0.0) for d in importances.values()))
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.45 * max(2, len(params)) * max(1, len(importances)) ** 0.5))
    h = 0.8 / max(1, len(importances))
    for j, (obj, d) in enumerate(importances.items()):
        ax.barh([i + j * h for i in range(len(params))], [d.get(p, 0.0) for p in params], height=h, label=obj)
    ax.set_yticks([i + h * (len(importances) - 1) / 2 for i in range(len(params))])
    ax.set_yticklabels([p.replace("stages.", "").replace(".recipes.", ".") for p in params], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("importance (fANOVA, per objective)")
    ax.set_ylabel("parameter")
    ax.set_title(title or "parameter importance")
    if importances:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="x")
    else:
        ax.text(0.5, 0.5, message or "no importances", ha="center", va="center", transform=ax.transAxes,
                color="gray", wrap=True)
    return fig


def pareto_front(trials: list[dict[str, Any]], path: Path, **kwargs: Any) -> Path:
    return save_figure(pareto_figure(trials, **kwargs), path)


def param_importance(importances: dict[str, dict[str, float]], path: Path, message: str | None = None,
                     title: str = "") -> Path:
    return save_figure(importance_figure(importances, message, title), path)
