"""The sweep file: a base pipeline recipe plus a search space over any of its settings.

    name: demo-sweep                      # default: the file's stem
    recipe: ../recipes/demo.yaml          # relative to this file, else to the repository root
    objectives: [accuracy, throughput]    # or [accuracy]: single objective (pruned with MedianPruner)
    trials: 8                             # the study's total (all workers together)
    quick: true                           # each trial runs the pipeline with --quick
    sampler: {type: nsga2, seed: 0}       # nsga2 | tpe | random (default: nsga2 for 2, tpe for 1)
    pruner: {n_startup_trials: 2, n_warmup_steps: 0}     # single objective only; {type: none} turns off
    storage: null                         # SQLAlchemy URL; default sqlite:///results/sweeps/<name>/study.db
    heartbeat_interval: 30                # seconds; a RUNNING trial silent for grace_period is FAILed
    grace_period: 120
    retries: 1                            # times a trial killed with its worker is re-run (same params)
    top_k: 3                              # single objective: how many best recipes to export
    keep_artifacts: false                 # keep each trial's saved models (disk heavy)
    peers: [torch-fp32, torch-int8-x86, ort-int8]   # bench engines each front trial's model is run on; [] = none
    overrides:                            # fixed changes to the base recipe, by path
      quick.train_examples: 512
      stages.int8.enabled: false          # (drops the stage from every trial)
    space:                                # path -> distribution
      stages.student.recipes.student.layers: {choices: [[0, 2, 4], [0, 5], [1, 3, 5]]}
      stages.pruned.recipes.magnitude_prune.sparsity: {low: 0.5, high: 0.95}
      stages.pruned.recipes.magnitude_prune.block: {choices: [[1, 4], [4, 1], [1, 1]]}
      stages.student.recipes.distill_logits.temperature: {low: 1.0, high: 8.0, log: true}
      stages.student.train.lr: {low: 1.0e-5, high: 3.0e-4, log: true}
      stages.int8.enabled: {choices: [true, false]}   # false removes the stage

A *path* walks the recipe as `PipelineSpec.to_dict()` writes it (every default filled in):
mapping keys by name, `stages` by stage name (or index), a stage's `recipes` by recipe name (or
index). `stages.<name>.enabled` is the one setting that is not in a recipe: false drops the
stage (stages that came `from` it come from its source instead).

Selection is on validation data: a trial's `accuracy` objective is its last stage's accuracy on
the validation split (measured by the sweep); the recipe's `eval.split` must stay `test`, which
each stage then reports, so the chosen trials' test accuracy is reported but never chosen on.

Distributions: `{choices: [...]}` (any YAML values, lists included), or `{low, high}` with
optional `log: true`, `step: <number>`, `type: int|float` (default: the type of the base value).
Everything is checked before any trial runs: each path must exist in the base recipe and every
choice and both ends of every range must give a valid pipeline (`PipelineSpec.from_dict`).

Paths are read and set by `workbench.sweep.recipe_paths`, distributions parsed by
`workbench.sweep.space`; this module builds and validates the whole sweep.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, fail, load_yaml_file, reject_unknown_keys
from workbench.paths import REPO_ROOT
from workbench.sweep.recipe_paths import ENABLED  # noqa: F401  (re-exported)
from workbench.sweep.recipe_paths import _is_enabled_path, _named_item, _split, drop_stages, get_path, set_path
from workbench.sweep.space import Param, parse_param

OBJECTIVES = ("accuracy", "throughput")
SAMPLERS = ("nsga2", "tpe", "random")
TOP_KEYS = {"name", "recipe", "objectives", "objective", "trials", "quick", "sampler", "pruner", "storage",
            "heartbeat_interval", "grace_period", "retries", "top_k", "keep_artifacts", "overrides", "space",
            "workers", "peers"}
DEFAULT_PEERS = ("torch-fp32", "torch-int8-x86", "ort-int8")
SELECTION_SPLIT = "validation"   # where objectives are measured; the recipe's eval.split (test) only reports


# ------------------------------------------------------------------------------ the sweep
@dataclass
class SweepSpec:
    name: str
    recipe_path: Path
    base: dict[str, Any]                  # the base recipe as PipelineSpec.to_dict(), overrides applied
    params: list[Param]
    objectives: list[str]
    trials: int = 20
    quick: bool = False
    sampler: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=dict)
    storage: str | None = None
    heartbeat_interval: int = 30
    grace_period: int = 120
    retries: int = 1
    top_k: int = 3
    keep_artifacts: bool = False
    workers: int = 1
    source: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    peers: list[str] = field(default_factory=lambda: list(DEFAULT_PEERS))

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return ["maximize"] * len(self.objectives)

    def fingerprint(self) -> str:
        """What must not change between runs continuing one study: base recipe, space, objectives."""
        blob = {"base": self.base, "space": [(p.path, p.kind, p.choices, p.low, p.high, p.log, p.step)
                                             for p in self.params], "objectives": self.objectives,
                "quick": self.quick, "selection": SELECTION_SPLIT}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def recipe_dict(self, values: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        """The base recipe with `values` (path -> value) applied, as a dict for PipelineSpec.from_dict."""
        data = copy.deepcopy(self.base)
        disabled = []
        for path, value in values.items():
            tokens = path.split(".")
            if _is_enabled_path(tokens):
                if value is False:
                    disabled.append(data["stages"][_named_item(data["stages"], tokens[1], "stage",
                                                               "sweep", path)]["name"])
                continue
            set_path(data, path, value)
        drop_stages(data, disabled)
        if name:
            data["name"] = name
        return data

    def build(self, values: dict[str, Any], name: str | None = None) -> Any:
        from workbench.pipeline import PipelineSpec

        return PipelineSpec.from_dict(self.recipe_dict(values, name))

    def values_from_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """trial.params (as Optuna stores them) -> recipe values by path."""
        by_path = {p.path: p for p in self.params}
        return {k: by_path[k].decode(v) if k in by_path else v for k, v in params.items()}

    def to_dict(self) -> dict[str, Any]:
        """The sweep as resolved (storage passwords masked), for sweep.yaml beside the results."""
        space = {}
        for p in self.params:
            if p.kind == "categorical":
                space[p.path] = {"choices": p.choices}
            else:
                space[p.path] = {"low": p.low, "high": p.high, "type": p.kind, "log": p.log,
                                 **({"step": p.step} if p.step else {})}
        return {"name": self.name, "recipe": str(self.recipe_path), "objectives": self.objectives,
                "trials": self.trials, "quick": self.quick, "sampler": self.sampler, "pruner": self.pruner,
                "storage": mask_url(self.storage) if self.storage else None,
                "heartbeat_interval": self.heartbeat_interval, "grace_period": self.grace_period,
                "retries": self.retries, "top_k": self.top_k, "keep_artifacts": self.keep_artifacts,
                "overrides": self.overrides, "peers": self.peers, "space": space}


def mask_url(url: str) -> str:
    """An SQLAlchemy URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _resolve_recipe(raw: Any, base_dir: Path | None) -> Path:
    if not isinstance(raw, str) or not raw:
        fail("sweep", "recipe", f"must be the path of a pipeline recipe (YAML), got {raw!r}")
    p = Path(raw).expanduser()
    candidates = [p] if p.is_absolute() else (
        ([base_dir / p] if base_dir else []) + [REPO_ROOT / p, Path.cwd() / p])
    for c in candidates:
        if c.is_file():
            return c.resolve()
    fail("sweep", "recipe", f"'{raw}' not found (looked in: {', '.join(str(c.parent) for c in candidates)})")


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
    """Build and fully validate a sweep (see the module docstring). Raises ConfigError naming the key."""
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
    if sampler.get("population_size") is not None and sampler["population_size"] < 2:
        fail("sweep sampler", "population_size", f"must be >= 2, got {sampler['population_size']}")
    pruner = _options(data, "pruner", {"type": str, "n_startup_trials": int, "n_warmup_steps": int,
                                       "interval_steps": int})
    pruner.setdefault("type", "median" if len(objectives) == 1 else "none")
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
    path = Path(path)
    data = load_yaml_file(path, "sweep file")
    return parse_sweep(data, source=path.resolve(), default_name=path.stem)
