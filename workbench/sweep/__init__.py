"""Optuna sweeps over any setting of a pipeline recipe (`workbench sweep SWEEP.yaml`).

    from workbench.sweep import load_sweep, run_sweep
    sweep = load_sweep("sweeps/demo_sweep.yaml")       # validated before any trial
    result = run_sweep(sweep, quick=True, workers=2)   # -> {"dir", "storage", "best", "counts"}

See `workbench.sweep.spec` for the sweep file format and `workbench.sweep.runner` for storage,
workers and crash recovery.
"""
from workbench.sweep.runner import best_trials, export, open_study, run_sweep, storage_url, sweep_dir, trial_rows  # noqa: F401
from workbench.sweep.spec import SweepSpec, get_path, load_sweep, parse_sweep, set_path  # noqa: F401
