"""A pipeline repeated over seeds: `workbench run RECIPE --seeds 0,1,2`.

Each seed runs into `results/<name>/seed-<s>/` (a complete run of its own, resumable like any
other). What does not depend on the seed is shared: the data split and tokenization (the
pipeline's `seed:` fixes the split), and stages pinned with their own `seed:` (e.g. the
teacher), which train once and are reused by every seed. The folder then holds:

* `seeds.csv`: one row per (seed, stage) with every measured column;
* `seeds_summary.csv`: per stage, for accuracy, macro-F1 and throughput, `mean_<metric>`, the sample
  standard deviation and the 95% confidence interval of the mean (Student's t), and n;
* `accuracy_vs_throughput.png`: the stages' means with their spread as error bars.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from workbench.paths import results_dir
from workbench.pipeline.run import STAGE_COLUMNS, PipelineRun
from workbench.pipeline.spec import PipelineSpec
from workbench.results import write_csv

SPREAD_METRICS = ("accuracy", "macro_f1", "throughput_b1", "throughput_b8")


def t_quantile_975(dof: int) -> float:
    """Two-sided 95% quantile of Student's t with `dof` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def aggregate(rows: list[dict[str, Any]], metrics: tuple[str, ...] = SPREAD_METRICS,
              by: str = "stage") -> list[dict[str, Any]]:
    """Per group (stage, in first-seen order): n, and for each metric mean, std, ci95 (half-width)."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r[by], []).append(r)
    out = []
    for name, rs in groups.items():
        row: dict[str, Any] = {by: name, "n": len(rs)}
        for m in metrics:
            vals = [float(r[m]) for r in rs if r.get(m) not in (None, "")]
            if not vals:
                continue
            mean = statistics.fmean(vals)
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            ci = t_quantile_975(len(vals) - 1) * std / math.sqrt(len(vals)) if len(vals) > 1 else float("nan")
            row.update({f"mean_{m}": mean, f"std_{m}": std, f"ci95_{m}": ci})
        out.append(row)
    return out


def run_seeds(spec: PipelineSpec, seeds: list[int], *, quick: bool = False, results_root: Path | None = None,
              run_name: str | None = None, fresh: bool = False, remeasure: bool = False) -> list[dict[str, Any]]:
    """Run `spec` once per seed; returns the per-seed rows (also written with the summary)."""
    from workbench.plots.seeds import spread_plot

    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must list distinct seeds, got {seeds}")
    folder = Path(results_root or results_dir()) / (run_name or spec.name)
    rows: list[dict[str, Any]] = []
    first: PipelineRun | None = None
    for s in seeds:
        run = PipelineRun(spec, quick=quick, results_root=folder, run_name=f"seed-{s}", fresh=fresh,
                          remeasure=remeasure, seed=s, shared_with=first)
        print(f"[workbench] seed {s} ({seeds.index(s) + 1}/{len(seeds)})", flush=True)
        rows += [{**m, "seed": s} for m in run.run()]
        first = first or run
        summary = aggregate(rows)
        write_csv(folder / "seeds.csv", rows, ["seed"] + [c for c in STAGE_COLUMNS if c != "seed"])
        write_csv(folder / "seeds_summary.csv", summary)
        spread_plot(summary, folder / "accuracy_vs_throughput.png",
                    title=f"{spec.name}: {len(set(r['seed'] for r in rows))} seeds" + (" (quick)" if quick else ""),
                    batch=spec.eval.speed_batches[0])
    return rows
