"""A sweep's exports from its study: trials.csv (one row per trial) and best/<trial>.yaml, the
Pareto front (2 objectives) or top-k trials as recipes runnable with `workbench run`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.results import atomic_write_text, write_csv
from workbench.sweep.spec import SweepSpec
from workbench.sweep.study import best_trials, trial_rows


# ------------------------------------------------------------------------------ exports
def export(study: Any, sweep: SweepSpec, out: Path) -> list[dict[str, Any]]:
    """best/<trial>.yaml for the Pareto front (or top-k), runnable with `workbench run`; trials.csv."""
    rows = trial_rows(study, sweep.objectives)
    write_csv(out / "trials.csv", rows, list(dict.fromkeys(k for r in rows for k in r)) or ["number", "state"])
    best_dir = out / "best"
    best = []
    keep = set()
    for rank, t in enumerate(best_trials(study, sweep.top_k), 1):
        recipe = t.user_attrs.get("recipe") or sweep.build(sweep.values_from_params(t.params),
                                                           name=f"{sweep.name}-trial{t.number}").to_dict()
        fname = f"trial-{t.number}.yaml"
        keep.add(fname)
        row = next(r for r in rows if r["number"] == t.number)
        obj = ", ".join(f"{c} {row[c]:.4g}" for c in ("val_accuracy", "test_accuracy", "throughput")
                        if isinstance(row.get(c), (int, float)))
        header = (f"# Sweep '{sweep.name}', trial {t.number} ({'Pareto front' if sweep.multi else f'rank {rank}'}): "
                  f"{obj}\n# (chosen on val_accuracy, the validation split; test_accuracy is reported only)"
                  f"\n# Run it: workbench run {best_dir / fname}\n"
                  + "".join(f"#   {k} = {json.dumps(v)}\n" for k, v in sweep.values_from_params(t.params).items()))
        import yaml

        atomic_write_text(best_dir / fname, header + yaml.safe_dump(recipe, sort_keys=False))
        best.append({"trial": t.number, "file": str(best_dir / fname),
                     **{k: row.get(k) for k in ("val_accuracy", "test_accuracy", "throughput")},
                     "params": t.user_attrs.get("params_count"), "nonzero_params": t.user_attrs.get("nonzero_params"),
                     "engine": t.user_attrs.get("engine")})
    if best_dir.exists():
        for old in best_dir.glob("trial-*.yaml"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
    return best
