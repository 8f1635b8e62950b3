"""Degradation test: `workbench degrade RECIPE --fractions 0.01,0.05,0.1,0.25,0.5,1.0`.

The whole pipeline (teacher and students) is trained on each fraction of the training split, and
accuracy is plotted against the number of training examples. The subsets are stratified (each
class keeps its share) and nested (the 1% subset lies inside the 5% one, and so on): per class,
one permutation drawn with the pipeline's data seed (`seed:`, which also fixes the split) is cut
at round(fraction * class size), at least one example per class. `--seeds` repeats the training
on the same subsets (a stage pinned with `seed:` is trained once per fraction). In `--quick` mode
the fractions are of the quick training subset.

Each fraction is a run folder of its own, `<results>/<name>/fraction-<f>/seed-<s>/`, resumed like
any run (finished stages are reused). The stage key includes the subset, so a cached stage
(`cache: true`) is shared between runs of the same fraction only. Next to them:

* `degradation.csv`: fraction, n_train, stage, seed, accuracy, macro_f1;
* `summary.csv`: per stage, the degradation slope: accuracy change per decade of training size
  (least-squares fit of accuracy on log10(n_train) over every seed's points), its intercept, the
  mean accuracy at the smallest and the largest fraction, and `degradation_pct`, the share of the
  largest fraction's accuracy lost at the smallest (the degradation test's own measure);
* `degradation.png`: mean accuracy (± std over seeds) against n_train on a log axis, per stage,
  with the fitted lines.

`--min-steps N` raises the epochs of a training stage on a small fraction until it runs at least N
optimizer steps, so the smallest fractions are not also the shortest trainings.
"""
from __future__ import annotations

import copy
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import ConfigError
from workbench.pipeline.run import PipelineRun, StageData
from workbench.pipeline.spec import PipelineSpec
from workbench.pipeline.store import stage_hash
from workbench.results import write_csv

DEFAULT_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
COLUMNS = ["fraction", "n_train", "stage", "seed", "accuracy", "macro_f1"]


def parse_fractions(text: str | list[float]) -> list[float]:
    """`0.01,0.05,...` -> floats in (0, 1], strictly increasing; a ConfigError names the problem."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()] if isinstance(text, str) else [float(x) for x in text]
    except ValueError:
        raise ConfigError(f"--fractions must be comma-separated numbers in (0, 1], e.g. 0.1,0.5,1.0; got {text!r}") from None
    if not values:
        raise ConfigError("--fractions must list at least one fraction in (0, 1]")
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if bad:
        raise ConfigError(f"--fractions: {bad[0]:g} is outside (0, 1]; each fraction is a share of the training split")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ConfigError(f"--fractions must be sorted and distinct (the subsets are nested), got {text!r}")
    return values


def nested_subsets(labels: list[int], fractions: list[float], seed: int) -> list[list[int]]:
    """Per fraction, sorted indices into `labels`: stratified (per class round(f * n_c), at least 1)
    and nested (each subset contains the previous ones), from one seeded permutation per class."""
    labels_arr = np.asarray(labels)
    rng = np.random.default_rng(seed)
    orders = {int(c): rng.permutation(np.flatnonzero(labels_arr == c)) for c in np.unique(labels_arr)}
    out = []
    for f in fractions:
        idx = np.concatenate([order[: max(1, int(round(f * len(order))))] for order in orders.values()])
        out.append(sorted(int(i) for i in idx))
    return out


class FractionRun(PipelineRun):
    """A pipeline run whose training split is one nested subset of the run's training split (of
    the quick subset in --quick mode); the subset is part of every stage key, and with
    `min_steps` the training stages get the epochs they need."""

    def __init__(self, spec: PipelineSpec, fraction: float, fractions: list[float], min_steps: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self.fraction, self.fractions, self.min_steps = fraction, fractions, min_steps

    def _prepare(self) -> None:
        super()._prepare()
        self.subset = getattr(self.shared_with, "subset", getattr(self, "subset", None))
        self.spec = with_min_steps(self.spec, len(self.train_data), self.min_steps, self.quick)

    def _tokenize(self, tokenizer: Any) -> StageData:
        data = super()._tokenize(tokenizer)
        labels = [int(y) for y in data.train.with_format(None)["labels"]]
        self.subset = nested_subsets(labels, self.fractions, self.spec.seed)[self.fractions.index(self.fraction)]
        data.train = data.train.select(self.subset)
        return data

    def _stage_key(self, index: int) -> str:
        return stage_hash({"stage": super()._stage_key(index), "train_subset": stage_hash(self.subset)})


def with_min_steps(spec: PipelineSpec, n_train: int, min_steps: int, quick: bool) -> PipelineSpec:
    """A copy of `spec` whose training stages run at least `min_steps` optimizer steps on
    `n_train` examples (more epochs; never fewer than written)."""
    if min_steps <= 0:
        return spec
    spec = copy.deepcopy(spec)
    for stage in spec.stages:
        if stage.train is None:
            continue
        batch = (spec.quick.batch_size or stage.train.batch_size) if quick else stage.train.batch_size
        need = math.ceil(min_steps / max(1, math.ceil(n_train / batch)))
        if quick:
            spec.quick.epochs = max(spec.quick.epochs, need)
        else:
            stage.train.epochs = max(stage.train.epochs, need)
    return spec


def degrade(spec: PipelineSpec, fractions: list[float], seeds: list[int], *, quick: bool = False,
            results_root: Path | None = None, run_name: str | None = None, fresh: bool = False,
            min_steps: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run `spec` on each fraction and seed; write degradation.csv, summary.csv, degradation.png.
    Returns (rows, summary)."""
    from workbench.paths import results_dir

    fractions = parse_fractions(list(fractions))
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must list distinct seeds, got {seeds}")
    if min_steps < 0:
        raise ConfigError(f"--min-steps must be >= 0, got {min_steps}")
    folder = Path(results_root or results_dir()) / (run_name or spec.name)
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for f in fractions:
        first: FractionRun | None = None
        for s in seeds:
            run = FractionRun(spec, f, fractions, min_steps, quick=quick, results_root=folder / f"fraction-{f:g}",
                              run_name=f"seed-{s}", fresh=fresh, seed=s, shared_with=first)
            print(f"[workbench] fraction {f:g}, seed {s}", flush=True)
            metrics = run.run()
            first = first or run
            rows += [{"fraction": f, "n_train": len(run.train_data), "stage": m["stage"], "seed": s,
                      "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]} for m in metrics]
            summary = write_outputs(folder, rows, title=f"{spec.name}: accuracy vs training size"
                                    + (" (quick)" if quick else ""))
    return rows, summary


def fit_slope(n_train: list[float], accuracy: list[float]) -> tuple[float, float]:
    """Least-squares fit accuracy = intercept + slope * log10(n_train): (slope per decade, intercept);
    (nan, nan) with fewer than two distinct sizes."""
    x = np.log10(np.asarray(n_train, dtype=float))
    y = np.asarray(accuracy, dtype=float)
    if len(set(x.tolist())) < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for stage in dict.fromkeys(r["stage"] for r in rows):
        rs = [r for r in rows if r["stage"] == stage]
        slope, intercept = fit_slope([r["n_train"] for r in rs], [r["accuracy"] for r in rs])
        lo, hi = min(r["fraction"] for r in rs), max(r["fraction"] for r in rs)
        smallest = statistics.fmean(r["accuracy"] for r in rs if r["fraction"] == lo)
        largest = statistics.fmean(r["accuracy"] for r in rs if r["fraction"] == hi)
        out.append({"stage": stage, "points": len(rs), "slope_per_decade": slope, "intercept": intercept,
                    "accuracy_smallest": smallest, "accuracy_largest": largest,
                    # the degradation test's measure: the share of the largest fraction's accuracy lost
                    "degradation_pct": 100.0 * (largest - smallest) / largest if largest else float("nan"),
                    "fraction_smallest": lo, "fraction_largest": hi})
    return out


def write_outputs(folder: Path, rows: list[dict[str, Any]], title: str = "") -> list[dict[str, Any]]:
    summary = summarize(rows)
    write_csv(folder / "degradation.csv", rows, COLUMNS)
    write_csv(folder / "summary.csv", summary)
    plot(rows, summary, folder / "degradation.png", title)
    return summary


def plot(rows: list[dict[str, Any]], summary: list[dict[str, Any]], path: Path, title: str = "") -> None:
    from workbench.plots.runs import plt, save_figure

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, s in enumerate(summary):
        rs = [r for r in rows if r["stage"] == s["stage"]]
        sizes = sorted({r["n_train"] for r in rs})
        means = [statistics.fmean(r["accuracy"] for r in rs if r["n_train"] == n) for n in sizes]
        stds = [statistics.stdev(v) if len(v := [r["accuracy"] for r in rs if r["n_train"] == n]) > 1 else 0.0
                for n in sizes]
        color = f"C{i % 10}"
        slope = s["slope_per_decade"]
        label = s["stage"] + (f" ({100 * slope:+.1f} pts/decade)" if slope == slope else "")
        ax.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, color=color, label=label)
        if slope == slope:
            xs = np.array([min(sizes), max(sizes)], dtype=float)
            ax.plot(xs, s["intercept"] + slope * np.log10(xs), ls="--", lw=1, color=color)
    ax.set_xscale("log")
    ax.set_xlabel("training examples (log scale)")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title(title or "accuracy vs training size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, path)
