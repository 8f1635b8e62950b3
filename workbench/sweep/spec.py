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
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import ConfigError, fail, load_yaml_file, reject_unknown_keys
from workbench.paths import REPO_ROOT

OBJECTIVES = ("accuracy", "throughput")
SAMPLERS = ("nsga2", "tpe", "random")
TOP_KEYS = {"name", "recipe", "objectives", "objective", "trials", "quick", "sampler", "pruner", "storage",
            "heartbeat_interval", "grace_period", "retries", "top_k", "keep_artifacts", "overrides", "space",
            "workers", "peers"}
ENABLED = "enabled"
DEFAULT_PEERS = ("torch-fp32", "torch-int8-x86", "ort-int8")
SELECTION_SPLIT = "validation"   # where objectives are measured; the recipe's eval.split (test) only reports


# ------------------------------------------------------------------------------ paths
def _split(path: str, where: str) -> list[str]:
    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
        raise ConfigError(f"{where}: '{path}' is not a valid path (dot-separated names, e.g. "
                          "stages.student.train.lr)")
    return path.split(".")


def _named_item(items: list[Any], token: str, kind: str, where: str, path: str) -> int:
    """Index of the list item named `token` (stages by 'name', recipes by their one key) or by index."""
    names = [it.get("name") if kind == "stage" else next(iter(it)) for it in items]
    if token in names:
        if names.count(token) > 1:
            raise ConfigError(f"{where}: '{path}': {kind} '{token}' occurs {names.count(token)} times; "
                              f"address it by index ({', '.join(f'{i}={n}' for i, n in enumerate(names))})")
        return names.index(token)
    if token.isdigit() and int(token) < len(items):
        return int(token)
    close = difflib.get_close_matches(token, [str(n) for n in names], n=1)
    raise ConfigError(f"{where}: '{path}': no {kind} '{token}' in the base recipe"
                      + (f"; did you mean '{close[0]}'?" if close else "")
                      + f" (known: {', '.join(map(str, names))})")


def _walk(data: Any, tokens: list[str], where: str, path: str) -> tuple[Any, Any]:
    """The container holding the last token and the key/index within it."""
    node = data
    for depth, token in enumerate(tokens):
        last = depth == len(tokens) - 1
        parent_key = tokens[depth - 1] if depth else None
        if isinstance(node, list):
            kind = "stage" if parent_key == "stages" else "recipe" if parent_key == "recipes" else None
            if kind is None:
                if not token.isdigit() or int(token) >= len(node):
                    raise ConfigError(f"{where}: '{path}': '{token}' is not an index of the list "
                                      f"{'.'.join(tokens[:depth])} (length {len(node)})")
                key: Any = int(token)
            else:
                key = _named_item(node, token, kind, where, path)
            if last:
                return node, key
            node = node[key]
            if kind == "recipe":  # a recipe item is {name: settings}: step into the settings
                node = next(iter(node.values()))
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: '{path}': '{'.'.join(tokens[:depth])}' is a value "
                              f"({node!r}), it has no setting '{token}'")
        if token not in node:
            known = sorted(map(str, node))
            close = difflib.get_close_matches(token, known, n=1)
            raise ConfigError(f"{where}: '{path}': no setting '{token}' at "
                              f"'{'.'.join(tokens[:depth]) or '(top)'}' of the base recipe"
                              + (f"; did you mean '{close[0]}'?" if close else "")
                              + f" (known: {', '.join(known)})")
        if last:
            return node, token
        node = node[token]
    raise AssertionError("unreachable")


def _is_enabled_path(tokens: list[str]) -> bool:
    return len(tokens) == 3 and tokens[0] == "stages" and tokens[2] == ENABLED


def get_path(data: dict[str, Any], path: str, where: str = "sweep") -> Any:
    tokens = _split(path, where)
    if _is_enabled_path(tokens):
        _named_item(data["stages"], tokens[1], "stage", where, path)
        return True
    node, key = _walk(data, tokens, where, path)
    return node[key]


def set_path(data: dict[str, Any], path: str, value: Any, where: str = "sweep") -> None:
    """Set `path` in the recipe dict `data` in place (`stages.X.enabled` is applied later)."""
    tokens = _split(path, where)
    if _is_enabled_path(tokens):
        _named_item(data["stages"], tokens[1], "stage", where, path)
        return
    node, key = _walk(data, tokens, where, path)
    node[key] = copy.deepcopy(value)


def drop_stages(data: dict[str, Any], disabled: list[str]) -> None:
    """Remove the named stages; a stage that came `from` a dropped one comes from its source."""
    for name in disabled:
        stages = data["stages"]
        i = next(k for k, s in enumerate(stages) if s["name"] == name)
        source = stages[i].get("from") or (stages[i - 1]["name"] if i else None)
        for later in stages[i + 1:]:
            if later.get("from") == name:
                if source is None:
                    later.pop("from")
                else:
                    later["from"] = source
        del stages[i]
    if not data["stages"]:
        raise ConfigError("sweep: every stage was disabled; a pipeline needs at least one stage")


# ------------------------------------------------------------------------------ distributions
@dataclass
class Param:
    path: str
    kind: str                      # "categorical" | "float" | "int"
    choices: list[Any] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None

    @property
    def encoded(self) -> bool:
        """Optuna's categorical values must be None/bool/int/float/str: other choices go as JSON."""
        return self.kind == "categorical" and any(
            not (c is None or isinstance(c, (bool, int, float, str))) for c in self.choices)

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            if self.encoded:
                return json.loads(trial.suggest_categorical(self.path, [json.dumps(c) for c in self.choices]))
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.path, self.low, self.high, step=self.step, log=self.log)

    def decode(self, value: Any) -> Any:
        """A value as Optuna stored it (trial.params) -> the recipe value."""
        return json.loads(value) if self.encoded and isinstance(value, str) else value

    def corners(self) -> list[Any]:
        return list(self.choices) if self.kind == "categorical" else (
            [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high])

    def describe(self) -> str:
        if self.kind == "categorical":
            return "choices " + ", ".join(json.dumps(c) for c in self.choices)
        return (f"{self.kind} [{self.low:g}, {self.high:g}]" + (" log" if self.log else "")
                + (f" step {self.step:g}" if self.step else ""))


def _number(v: Any, where: str, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        fail(where, key, f"must be a number, got {v!r}")
    try:
        f = float(v)
    except ValueError:
        fail(where, key, f"must be a number, got {v!r}")
    if not math.isfinite(f):
        fail(where, key, f"must be finite, got {v!r}")
    return f


def parse_param(path: str, raw: Any, base_value: Any) -> Param:
    where = f"sweep space '{path}'"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping, {{choices: [...]}} or {{low: .., high: .., log: ..}}, "
                          f"got {raw!r}")
    tokens = path.split(".")
    if "choices" in raw:
        extra = set(raw) - {"choices"}
        if extra:
            fail(where, sorted(extra)[0], "cannot be combined with 'choices'")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            fail(where, "choices", f"must be a non-empty list, got {choices!r}")
        if len({json.dumps(c, sort_keys=True) for c in choices}) != len(choices):
            fail(where, "choices", f"has repeated values: {choices!r}")
        if _is_enabled_path(tokens) and not all(isinstance(c, bool) for c in choices):
            fail(where, "choices", f"must be true/false for 'enabled', got {choices!r}")
        return Param(path, "categorical", choices=list(choices))
    if _is_enabled_path(tokens):
        fail(where, "choices", "is required for 'enabled' (e.g. {choices: [true, false]})")
    known = {"low", "high", "log", "step", "type"}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known | {"choices"}), n=1)
            fail(where, str(key), "is not a distribution setting" + (f"; did you mean '{close[0]}'?" if close else "")
                 + " (known: choices, or low, high, log, step, type)")
    for key in ("low", "high"):
        if key not in raw:
            fail(where, key, "is required (or give 'choices')")
    low, high = _number(raw["low"], where, "low"), _number(raw["high"], where, "high")
    kind = raw.get("type")
    if kind is None:
        if isinstance(base_value, bool):
            fail(where, "low", "a true/false setting needs {choices: [true, false]}")
        if isinstance(base_value, int):
            kind = "int"
        elif isinstance(base_value, float):
            kind = "float"
        elif base_value is None:
            kind = "int" if all(isinstance(raw[k], int) and not isinstance(raw[k], bool)
                                for k in ("low", "high")) else "float"
        else:
            fail(where, "low", f"a range needs a numeric setting; the base value is {base_value!r} "
                 "(use 'choices')")
    if kind not in ("int", "float"):
        fail(where, "type", f"must be 'int' or 'float', got {kind!r}")
    if kind == "int" and (low != int(low) or high != int(high)):
        fail(where, "low", f"must be integers for an int setting, got low={raw['low']!r} high={raw['high']!r}")
    if low >= high:
        fail(where, "high", f"must be > low, got low={raw['low']!r} high={raw['high']!r}")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        fail(where, "log", f"must be true or false, got {log!r}")
    if log and low <= 0:
        fail(where, "low", f"must be > 0 with log: true, got {raw['low']!r}")
    step = raw.get("step")
    if step is not None:
        step = _number(step, where, "step")
        if step <= 0:
            fail(where, "step", f"must be > 0, got {raw['step']!r}")
        if log:
            fail(where, "step", "cannot be combined with log: true")
        if kind == "int" and step != int(step):
            fail(where, "step", f"must be an integer for an int setting, got {raw['step']!r}")
        if step > high - low:
            fail(where, "step", f"is larger than high - low ({high - low:g})")
    return Param(path, kind, low=low, high=high, log=log, step=step)


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
