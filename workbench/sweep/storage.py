"""Where a sweep's results and Optuna study live, and opening the study on RDB storage.

`storage_url` picks the study's SQLAlchemy URL (--storage, $WORKBENCH_SWEEP_STORAGE, the sweep
file, else SQLite under `sweep_dir`); `open_study` creates or loads the study with the sweep's
sampler and pruner and refuses a stored study made from a different sweep (fingerprint).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from workbench.config import ConfigError
from workbench.paths import results_dir
from workbench.sweep.spec import SweepSpec, mask_url
from workbench.sweep.study import STORAGE_ENV, with_driver
from workbench.optuna_import import optuna_module as _optuna


def sweep_dir(sweep: SweepSpec, root: Path | None = None) -> Path:
    return Path(root or results_dir()) / "sweeps" / sweep.name


def storage_url(sweep: SweepSpec, root: Path | None = None, override: str | None = None) -> str:
    url = override or os.environ.get(STORAGE_ENV) or sweep.storage
    if url:
        return url
    return f"sqlite:///{(sweep_dir(sweep, root) / 'study.db').resolve()}"


def make_storage(url: str, sweep: SweepSpec, heartbeat: bool = True) -> Any:
    optuna = _optuna()
    url = with_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
        Path(url.split("sqlite:///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
    else:
        engine_kwargs = {"pool_pre_ping": True}
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {"heartbeat_interval": sweep.heartbeat_interval, "grace_period": sweep.grace_period,
                  "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                      max_retry=sweep.retries)}
    last: Exception | None = None
    for attempt in range(5):  # several processes creating the tables at once may collide
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except ImportError:
            raise
        except Exception as exc:  # sqlalchemy OperationalError / IntegrityError while racing
            last = exc
            time.sleep(0.5 + attempt)
    raise ConfigError(f"sweep storage '{mask_url(url)}' cannot be opened: {type(last).__name__}: {last}")


def _sampler(sweep: SweepSpec, salt: int) -> Any:
    optuna = _optuna()
    s = sweep.sampler
    seed = None if s.get("seed") is None else int(s["seed"]) + salt
    if s["type"] == "nsga2":
        pop = s.get("population_size") or max(4, min(50, sweep.trials // 2))
        return optuna.samplers.NSGAIISampler(population_size=pop, seed=seed)
    if s["type"] == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=s.get("n_startup_trials") or max(2, min(10, sweep.trials // 3)),
            multivariate=bool(s.get("multivariate", True)))
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(sweep: SweepSpec) -> Any:
    optuna = _optuna()
    p = sweep.pruner
    if p["type"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.get("n_startup_trials") or 2,
                                           n_warmup_steps=p.get("n_warmup_steps") or 0,
                                           interval_steps=p.get("interval_steps") or 1)
    return optuna.pruners.NopPruner()


def open_study(sweep: SweepSpec, url: str, *, salt: int = 0, create: bool = False, heartbeat: bool = True) -> Any:
    """Create (create=True, idempotent) or load the sweep's study; checks it is the same sweep."""
    optuna = _optuna()
    storage = make_storage(url, sweep, heartbeat=heartbeat)
    if create:
        for attempt in range(5):
            try:
                study = optuna.create_study(storage=storage, study_name=sweep.name, directions=sweep.directions,
                                            sampler=_sampler(sweep, salt), pruner=_pruner(sweep),
                                            load_if_exists=True)
                break
            except optuna.exceptions.DuplicatedStudyError:
                time.sleep(0.5 + attempt)
        else:
            raise ConfigError(f"could not create or load study '{sweep.name}' in {mask_url(url)}")
        fp = study.user_attrs.get("fingerprint")
        if fp is None:
            study.set_user_attr("fingerprint", sweep.fingerprint())
            study.set_user_attr("objectives", sweep.objectives)
            study.set_user_attr("sweep", sweep.to_dict())
        elif fp != sweep.fingerprint():
            raise ConfigError(
                f"sweep '{sweep.name}': the study in {mask_url(url)} was created from a different base recipe, "
                "search space, objectives or quick setting; continue it with the same sweep file, or start "
                "over with --fresh (or choose another --name)")
    else:
        study = optuna.load_study(storage=storage, study_name=sweep.name, sampler=_sampler(sweep, salt),
                                  pruner=_pruner(sweep))
    if [d.name.lower() for d in study.directions] != sweep.directions:
        raise ConfigError(f"sweep '{sweep.name}': the stored study has {len(study.directions)} objective(s), "
                          f"the sweep file {len(sweep.objectives)}; use --fresh or another --name")
    return study
