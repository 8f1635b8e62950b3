"""Reading a sweep file: `parse_sweep` turns the raw YAML mapping into a `SweepSpec` and checks
all of it (every key, the base recipe with its overrides, every corner of the search space)
before any trial runs. The file format is documented in `workbench.sweep.spec`.
"""
from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, fail, load_yaml_file, reject_unknown_keys
from workbench.paths import REPO_ROOT
from workbench.sweep.recipe_paths import _is_enabled_path, _named_item, _split, drop_stages, get_path, set_path
from workbench.sweep.space import parse_param
from workbench.sweep.spec import DEFAULT_PEERS, SweepSpec

OBJECTIVES = ("accuracy", "throughput")
SAMPLERS = ("nsga2", "tpe", "random")
TOP_KEYS = {"name", "recipe", "objectives", "objective", "trials", "quick", "sampler", "pruner", "storage",
            "heartbeat_interval", "grace_period", "retries", "top_k", "keep_artifacts", "overrides", "space",
            "workers", "peers"}


def _resolve_recipe(raw: Any, base_dir: Path | None) -> Path:
    if not isinstance(raw, str) or not raw:
        fail("sweep", "recipe", f"must be the path of a pipeline recipe (YAML), got {raw!r}")
    p = Path(raw).expanduser()
    candidates = [p] if p.is_absolute() else (
        ([base_dir / p] if base_dir else []) + [REPO_ROOT / p, Path.cwd() / p])
    for c in candidates:
        if c.is_file():
            return c.resolve()
    folders = dict.fromkeys(str(c.parent.resolve()) for c in candidates)   # each named once
    fail("sweep", "recipe", f"'{raw}' not found (looked in: {', '.join(folders)})")


def _int(data: dict, key: str, default: int, minimum: int) -> int:
    v = data.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        fail("sweep", key, f"must be an integer, got {v!r}")
    if v < minimum:
        fail("sweep", key, f"must be >= {minimum}, got {v}")
    return v


def _options(data: dict, key: str, known: dict[str, type], where: str = "sweep") -> dict[str, Any]:
    raw = data.get(key) or {}
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        fail(where, key, f"must be a mapping, e.g. {{type: ...}}, got {raw!r}")
    reject_unknown_keys(raw, known, f"{where} {key}")
    for k, v in raw.items():
        tp = known[k]
        if v is not None and (isinstance(v, bool) != (tp is bool) or not isinstance(v, tp)):
            fail(f"{where} {key}", str(k), f"must be {tp.__name__}, got {v!r}")
    return dict(raw)


def parse_sweep(data: Any, *, source: Path | None = None, default_name: str = "sweep") -> SweepSpec:
    """Build and fully validate a sweep (the format: `workbench.sweep.spec`). Raises ConfigError naming the key."""
    from workbench.pipeline import PipelineSpec

    if not isinstance(data, dict):
        raise ConfigError(f"sweep: must be a mapping with 'recipe' and 'space', got {data!r}")
    reject_unknown_keys(data, TOP_KEYS, "sweep")
    for key in ("recipe", "space"):
        if key not in data:
            fail("sweep", key, "is required")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        fail("sweep", "name", f"must be a non-empty name without '/', got {name!r}")
    recipe_path = _resolve_recipe(data["recipe"], source.parent if source else None)
    base_spec = PipelineSpec.from_yaml(recipe_path)
    base = base_spec.to_dict()

    if "objective" in data and "objectives" in data:
        fail("sweep", "objective", "give either 'objective' or 'objectives', not both")
    objectives = data.get("objectives", data.get("objective", list(OBJECTIVES)))
    if isinstance(objectives, str):
        objectives = [objectives]
    if (not isinstance(objectives, list) or not objectives or len(set(objectives)) != len(objectives)
            or any(o not in OBJECTIVES for o in objectives)):
        fail("sweep", "objectives", f"must be a non-empty list of distinct {list(OBJECTIVES)}, got {objectives!r}")

    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        fail("sweep", "overrides", f"must be a mapping of path: value, got {overrides!r}")
    disabled = []
    for path, value in overrides.items():
        if _is_enabled_path(_split(str(path), "sweep overrides")):
            if not isinstance(value, bool):
                fail("sweep overrides", str(path), f"must be true or false, got {value!r}")
            i = _named_item(base["stages"], str(path).split(".")[1], "stage", "sweep overrides", str(path))
            if not value:
                disabled.append(base["stages"][i]["name"])
            continue
        set_path(base, str(path), value, "sweep overrides")
    drop_stages(base, disabled)
    try:
        PipelineSpec.from_dict(copy.deepcopy(base))
    except ConfigError as exc:
        raise ConfigError(f"sweep overrides: the base recipe with the overrides is invalid: {exc}") from exc

    space = data["space"]
    if not isinstance(space, dict) or not space:
        fail("sweep", "space", "must be a non-empty mapping of path: distribution")
    params = []
    for path, raw in space.items():
        path = str(path)
        base_value = get_path(base, path, f"sweep space '{path}'")
        params.append(parse_param(path, raw, base_value))

    sampler = _options(data, "sampler", {"type": str, "seed": int, "population_size": int,
                                         "n_startup_trials": int, "multivariate": bool})
    sampler.setdefault("type", "nsga2" if len(objectives) > 1 else "tpe")
    if sampler["type"] not in SAMPLERS:
        fail("sweep sampler", "type", f"must be one of {list(SAMPLERS)}, got {sampler['type']!r}")
    if sampler.get("seed") is not None and not 0 <= sampler["seed"] < 2**32:
        fail("sweep sampler", "seed", f"must be in [0, 2**32) (NumPy's generator seeds), got {sampler['seed']}")
    if sampler.get("n_startup_trials") is not None and sampler["n_startup_trials"] < 0:
        fail("sweep sampler", "n_startup_trials", f"must be >= 0, got {sampler['n_startup_trials']}")
    if sampler.get("population_size") is not None and sampler["population_size"] < 2:
        fail("sweep sampler", "population_size", f"must be >= 2, got {sampler['population_size']}")
    pruner = _options(data, "pruner", {"type": str, "n_startup_trials": int, "n_warmup_steps": int,
                                       "interval_steps": int})
    pruner.setdefault("type", "median" if len(objectives) == 1 else "none")
    for key, least in (("n_startup_trials", 0), ("n_warmup_steps", 0), ("interval_steps", 1)):
        if pruner.get(key) is not None and pruner[key] < least:
            fail("sweep pruner", key, f"must be >= {least}, got {pruner[key]}")
    if pruner["type"] not in ("median", "none"):
        fail("sweep pruner", "type", f"must be 'median' or 'none', got {pruner['type']!r}")
    if pruner["type"] == "median" and len(objectives) > 1:
        fail("sweep pruner", "type", "pruning needs a single objective (Optuna cannot prune multi-objective "
             "studies); use objectives: [accuracy] or pruner: {type: none}")

    storage = data.get("storage")
    if storage is not None and (not isinstance(storage, str) or "://" not in storage):
        fail("sweep", "storage", f"must be an SQLAlchemy URL like sqlite:///path.db or "
             f"postgresql://user@host/db, got {storage!r}")
    quick = data.get("quick", False)
    if not isinstance(quick, bool):
        fail("sweep", "quick", f"must be true or false, got {quick!r}")
    peers = _peers(data.get("peers", list(DEFAULT_PEERS)))
    keep = data.get("keep_artifacts", False)
    if not isinstance(keep, bool):
        fail("sweep", "keep_artifacts", f"must be true or false, got {keep!r}")
    sweep = SweepSpec(
        name=name, recipe_path=recipe_path, base=base, params=params, objectives=list(objectives),
        trials=_int(data, "trials", 20, 1), quick=quick, sampler=sampler, pruner=pruner, storage=storage,
        heartbeat_interval=_int(data, "heartbeat_interval", 30, 1), grace_period=_int(data, "grace_period", 120, 1),
        retries=_int(data, "retries", 1, 0), top_k=_int(data, "top_k", 3, 1), keep_artifacts=keep,
        workers=_int(data, "workers", 1, 1), source=source, overrides=dict(overrides), peers=peers)
    if sweep.grace_period <= sweep.heartbeat_interval:
        fail("sweep", "grace_period", f"must be > heartbeat_interval ({sweep.heartbeat_interval}), "
             f"got {sweep.grace_period}")
    validate_space(sweep)
    return sweep


def _peers(raw: Any) -> list[str]:
    """The bench engines (`workbench.bench.engines.ENGINES`) each front trial's model runs on."""
    from workbench.bench.engines import ENGINES

    if raw is None:
        return []
    if not isinstance(raw, list) or any(not isinstance(e, str) for e in raw) or len(set(raw)) != len(raw):
        fail("sweep", "peers", f"must be a list of distinct engine names (e.g. {list(DEFAULT_PEERS)}), "
             f"or [] for none, got {raw!r}")
    bad = [e for e in raw if e not in ENGINES]
    if bad:
        close = difflib.get_close_matches(bad[0], list(ENGINES), n=1)
        fail("sweep", "peers", f"unknown engine '{bad[0]}'" + (f"; did you mean '{close[0]}'?" if close else "")
             + f" (known: {', '.join(ENGINES)})")
    return list(raw)


def validate_space(sweep: SweepSpec) -> None:
    """Every choice and both ends of every range must give a valid pipeline, one knob at a time."""
    from workbench.pipeline import PipelineSpec

    for p in sweep.params:
        for value in p.corners():
            try:
                spec = PipelineSpec.from_dict(sweep.recipe_dict({p.path: value}))
            except ConfigError as exc:
                raise ConfigError(f"sweep space '{p.path}': value {json.dumps(value)} gives an invalid "
                                  f"pipeline: {exc}") from exc
            if spec.eval.split != "test":
                raise ConfigError(
                    f"sweep: the recipe's 'eval.split' is '{spec.eval.split}'"
                    + (f" when '{p.path}' is {json.dumps(value)}" if p.path.startswith("eval.") else "")
                    + "; a sweep chooses on the validation split itself and reports the test split, so "
                    "leave eval.split at 'test' (the default)")
            if "throughput" in sweep.objectives and 1 not in spec.eval.speed_batches:
                raise ConfigError("sweep objectives: 'throughput' is batch-1 samples/s; the recipe's "
                                  f"'eval.speed_batches' must include 1, got {spec.eval.speed_batches}")


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check the sweep file at `path` (every error names the file and key)."""
    path = Path(path)
    data = load_yaml_file(path, "sweep file")
    return parse_sweep(data, source=path.resolve(), default_name=path.stem)
