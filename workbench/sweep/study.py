"""Reading a sweep's Optuna study: storage URLs, loading a finished sweep, trial rows, best trials.

Both the sweep runner (`workbench.sweep.runner`) and the reports (`workbench.sweep.report`,
`workbench report`) use these; this module imports neither of them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.optuna_import import optuna_module

STORAGE_ENV = "WORKBENCH_SWEEP_STORAGE"


def with_driver(url: str) -> str:
    """`postgresql://` means psycopg (v3) to SQLAlchemy 2.1; use psycopg2 when only it is installed."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:
        return url
    if u.drivername == "postgresql":
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return u.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def load_study(folder: Path | str, storage: str | None = None) -> Any:
    """The study of the sweep in `folder` (results/sweeps/<name>/), for reading: `storage`, else
    $WORKBENCH_SWEEP_STORAGE, else its study.db, else the URL its sweep.yaml recorded."""
    import yaml

    folder = Path(folder)
    optuna = optuna_module()
    try:
        info = yaml.safe_load((folder / "sweep.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep '{folder.name}': {folder / 'sweep.yaml'} is not valid YAML ({exc})") from None
    if not isinstance(info, dict):
        raise ConfigError(f"sweep '{folder.name}': {folder / 'sweep.yaml'} is not a sweep's record (a mapping)")
    url = storage or os.environ.get(STORAGE_ENV)
    if not url and (folder / "study.db").is_file():
        url = f"sqlite:///{(folder / 'study.db').resolve()}"
    url = url or info.get("storage")
    if not url:
        raise ConfigError(f"sweep '{folder.name}': no study found (no study.db in {folder}, and its sweep.yaml "
                          "records no storage); pass --storage URL, or give the folder `workbench sweep` wrote")
    if "***" in str(url):
        raise ConfigError(f"sweep '{folder.name}': its storage needs a password; pass --storage URL")
    url = with_driver(url)
    try:
        return optuna.load_study(study_name=folder.name, storage=url)
    except KeyError:
        return optuna.load_study(study_name=info.get("name", folder.name), storage=url)


# objective -> trials.csv column: accuracy is chosen on the validation split (val_*); the test
# split (test_*) is reported for every trial and never chosen on; throughput has no split
OBJECTIVE_COLUMNS = {"accuracy": "val_accuracy", "throughput": "throughput"}
SPLIT_NOTE = ("val_* columns: the validation split (the objectives, which choose the front); test_* columns: "
              "the test split (reported only, never chosen on); throughput: batch-1 samples/s of the last "
              "stage on synthetic inputs (no split)")


def trial_rows(study: Any, sweep_objectives: list[str] | None = None) -> list[dict[str, Any]]:
    """One dict per trial: number, state, `val_accuracy` / `val_macro_f1` (validation split, what
    the sweep chooses on), `test_accuracy` / `test_macro_f1` (test split, reported only),
    `throughput`, last-stage size, `param:<path>` values.

    A trial of a study from before validation selection (no `val` record) chose on its test
    accuracy: that value goes to test_accuracy and its val_* columns stay empty."""
    objectives = sweep_objectives or study.user_attrs.get("objectives") or ["accuracy", "throughput"]
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        val, test = t.user_attrs.get("val"), t.user_attrs.get("test")
        stages = t.user_attrs.get("stages") or []
        last = stages[-1] if stages else {}
        values = dict(zip(objectives, t.values or []))
        row["val_accuracy"] = values.get("accuracy", val.get("accuracy")) if val else None
        row["val_macro_f1"] = val.get("macro_f1") if val else None
        row["test_accuracy"] = test["accuracy"] if test else last.get("accuracy")
        row["test_macro_f1"] = test.get("macro_f1") if test else last.get("macro_f1")
        row["throughput"] = values.get("throughput", last.get("throughput_b1"))
        row.update({"engine": last.get("engine"), "params": last.get("params"),
                    "nonzero_params": last.get("nonzero_params"), "stages": "+".join(s["stage"] for s in stages),
                    "duration_s": round(t.duration.total_seconds(), 1) if t.duration else None})
        row.update({f"param:{k}": (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in t.params.items()})
        rows.append(row)
    return rows


def best_trials(study: Any, top_k: int = 3) -> list[Any]:
    """The Pareto front (several objectives, most accurate first) or the top-k complete trials."""
    from optuna.trial import TrialState

    if len(study.directions) > 1:
        return sorted(study.best_trials, key=lambda t: -t.values[0])
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return sorted(done, key=lambda t: -t.value)[:top_k]
