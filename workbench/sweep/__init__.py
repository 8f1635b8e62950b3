"""Optuna sweeps over any setting of a pipeline recipe (`workbench sweep SWEEP.yaml`).

    from workbench.sweep import load_sweep, run_sweep
    sweep = load_sweep("sweeps/demo_sweep.yaml")       # validated before any trial
    result = run_sweep(sweep, quick=True, workers=2)   # -> {"dir", "storage", "best", "counts"}

See `workbench.sweep.spec` for the sweep file format (`parse` reads and checks it, `space` for its parameters,
`recipe_paths` for the dotted paths into a recipe), `workbench.sweep.runner` for workers
(`storage`: where a study lives, `liveness`: crash recovery, `exports`: trials.csv and the best
recipes), `workbench.sweep.study` for reading a study (trial rows, best trials), `workbench.sweep.peers` for the front trials' own models on peer engines and
`workbench.sweep.report` for the sweep's report. Objectives are measured on the validation
split; the test split is only reported (`val_accuracy` / `test_accuracy` in trials.csv).
"""
from workbench.sweep.runner import export, open_study, run_sweep, storage_url, sweep_dir  # noqa: F401
from workbench.sweep.study import best_trials, load_study, trial_rows  # noqa: F401
from workbench.sweep.parse import load_sweep, parse_sweep  # noqa: F401
from workbench.sweep.spec import SweepSpec, get_path, set_path  # noqa: F401

__all__ = ["SweepSpec", "best_trials", "export", "get_path", "load_study", "load_sweep", "open_study", "parse_sweep",
           "run_sweep", "set_path", "storage_url", "sweep_dir", "trial_rows"]
