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
`workbench.sweep.space`, and the file is read and checked by `workbench.sweep.parse`; this module
holds the resolved sweep (`SweepSpec`); `workbench.sweep.load_sweep(path)` reads one.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.sweep.recipe_paths import ENABLED  # noqa: F401  (re-exported)
from workbench.sweep.recipe_paths import _is_enabled_path, _named_item, drop_stages, set_path
from workbench.sweep.recipe_paths import get_path  # noqa: F401  (re-exported)
from workbench.sweep.space import Param

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
