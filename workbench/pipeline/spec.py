"""A pipeline's definition: ordered stages of recipes, given in YAML or Python, validated whole.

    name: demo
    task: rt-sentiment          # or {name: ..., text_column: ..., label_column: ..., max_length: ...}
    model: minilm-l6            # embedded name, local path or Hugging Face name
    seed: 0
    plugins: [my_recipes]       # modules to import first (their recipes become usable)
    stages:
      - name: teacher
        cache: true             # reuse the fine-tuned model across runs
        seed: 0                 # pin this stage's seed: every `--seeds` run shares this teacher
        recipes: [finetune]
        train: {epochs: 3, lr: 5.0e-5}
      - name: student
        recipes:
          - student: {layers: [0, 2, 4]}
          - <a distillation recipe>: {teacher: teacher}
        train: {epochs: 3, lr: 1.0e-4}

(`recipes/demo.yaml` and the README list the recipes.)

Everything here is checked before any work starts. The rules are generic: a stage trains when
one of its recipes contributes a loss or acts during training; each recipe checks its own
cross-stage conditions (`Recipe.check_stage`). This module names no recipe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from workbench.config import ConfigError, config_to_dict, fail, load_yaml_file, parse_config, reject_unknown_keys
from workbench.data import TaskConfig
from workbench.recipes.base import StageCheck, recipe_class
from workbench.train import TrainConfig


@dataclass
class EvalConfig:
    split: Literal["test", "validation"] = "test"
    batch_size: int = 64
    seq_len: int = 128
    speed_batches: list[int] = field(default_factory=lambda: [1, 8])
    speed_iters: int = 20

    def validate(self, where: str) -> None:
        if self.batch_size < 1:
            fail(where, "batch_size", f"must be >= 1, got {self.batch_size}")
        if self.seq_len < 8:
            fail(where, "seq_len", f"must be >= 8, got {self.seq_len}")
        if not self.speed_batches or min(self.speed_batches) < 1:
            fail(where, "speed_batches", f"must be a non-empty list of sizes >= 1, got {self.speed_batches}")
        if self.speed_iters < 1:
            fail(where, "speed_iters", f"must be >= 1, got {self.speed_iters}")


@dataclass
class QuickConfig:
    """What `--quick` shrinks: the same stages on a small subset, for tests and smoke runs."""

    train_examples: int = 800
    eval_examples: int = 300
    epochs: int = 2
    """Every training stage runs this many epochs over the `train_examples` subset."""
    batch_size: int | None = None
    """Training batch size of every stage in quick mode (None: each stage's own). Smaller batches
    give a short run more optimizer steps for the same compute."""
    speed_iters: int = 3

    def validate(self, where: str) -> None:
        for key in ("train_examples", "eval_examples", "epochs", "speed_iters"):
            if getattr(self, key) < 1:
                fail(where, key, f"must be >= 1, got {getattr(self, key)}")
        if self.batch_size is not None and self.batch_size < 1:
            fail(where, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass
class StageSpec:
    name: str
    recipes: list[tuple[str, Any]]
    train: TrainConfig | None = None
    source: str | None = None
    cache: bool = False
    seed: int | None = None
    """A fixed seed for this stage (None: the run's seed). With `--seeds`, a pinned stage is
    trained once and shared by every seed's run."""

    @property
    def trains(self) -> bool:
        return self.train is not None

    def to_dict(self, for_key: bool = False) -> dict[str, Any]:
        """The stage as YAML writes it, defaults filled in; `for_key`: as the stage key hashes it
        (settings marked KEY_OMITS_DEFAULT are left out while at their default)."""
        d: dict[str, Any] = {"name": self.name}
        if self.source:
            d["from"] = self.source
        if self.cache:
            d["cache"] = True
        if self.seed is not None:
            d["seed"] = self.seed
        d["recipes"] = [{n: config_to_dict(c, for_key)} for n, c in self.recipes]
        if self.train is not None:
            d["train"] = config_to_dict(self.train, for_key)
        return d


@dataclass
class PipelineSpec:
    name: str
    task: TaskConfig
    model: str
    stages: list[StageSpec]
    seed: int = 0
    eval: EvalConfig = field(default_factory=EvalConfig)
    quick: QuickConfig = field(default_factory=QuickConfig)
    plugins: list[str] = field(default_factory=list)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineSpec":
        return cls.from_dict(load_yaml_file(path, "recipe file"), default_name=Path(path).stem)

    @classmethod
    def from_dict(cls, data: dict[str, Any], default_name: str = "run") -> "PipelineSpec":
        if not isinstance(data, dict):
            raise ConfigError(f"pipeline: must be a mapping with 'task', 'model' and 'stages', got {data!r}")
        reject_unknown_keys(data, ("name", "task", "model", "seed", "eval", "quick", "stages", "plugins"), "pipeline")
        for key in ("task", "model", "stages"):
            if key not in data:
                fail("pipeline", key, "is required")
        plugins = data.get("plugins")
        plugins = [] if plugins is None else plugins  # (0 or '' are not "no plugins": named below)
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            fail("pipeline", "plugins", f"must be a list of module names, got {plugins!r}")
        if plugins:
            from workbench.plugins import load_plugins

            load_plugins(plugins, "pipeline 'plugins'")
        name = data.get("name", default_name)
        if not isinstance(name, str) or not name or "/" in name:
            fail("pipeline", "name", f"must be a non-empty name without '/', got {name!r}")
        task = data["task"]
        task_cfg = parse_config(TaskConfig, {"name": task} if isinstance(task, str) else task, "pipeline task")
        if not isinstance(data["model"], str):
            fail("pipeline", "model", f"must be a model name or path, got {data['model']!r}")
        seed = _seed(data.get("seed", 0), "pipeline")
        stages_raw = data["stages"]
        if not isinstance(stages_raw, list) or not stages_raw:
            fail("pipeline", "stages", "must be a non-empty list of stages")
        stages: list[StageSpec] = []
        for i, raw in enumerate(stages_raw):
            stages.append(parse_stage(raw, i, [s.name for s in stages]))
        spec = cls(name=name, task=task_cfg, model=data["model"], stages=stages, seed=seed,
                   eval=parse_config(EvalConfig, data.get("eval"), "pipeline eval"),
                   quick=parse_config(QuickConfig, data.get("quick"), "pipeline quick"), plugins=plugins)
        from workbench.pipeline.checks import (  # (imports this module)
            check_compiled_teachers, check_frozen_sources, check_teacher_vocabularies)

        check_frozen_sources(spec)
        check_compiled_teachers(spec)
        check_teacher_vocabularies(spec)
        return spec

    def source_index(self, index: int) -> int | None:
        """Index of the stage stage `index` starts from (`from:`, else the previous stage; None:
        the pipeline's model)."""
        stage = self.stages[index]
        if stage.source is not None:
            return next(i for i, s in enumerate(self.stages) if s.name == stage.source)
        return index - 1 if index else None

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "task": config_to_dict(self.task), "model": self.model, "seed": self.seed,
             "eval": config_to_dict(self.eval), "quick": config_to_dict(self.quick),
             "stages": [s.to_dict() for s in self.stages]}
        if self.plugins:
            d["plugins"] = list(self.plugins)
        return d


def _seed(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        fail(where, "seed", f"must be an integer >= 0 (NumPy's generators take no negative seed), got {value!r}")
    return value


def _recipe_items(raw: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        fail(where, "recipes", "must be a non-empty list, e.g. [finetune] or [{student: {layers: [0, 2, 4]}}, finetune]")
    items = []
    for item in raw:
        if isinstance(item, str):
            items.append((item, {}))
        elif isinstance(item, dict) and len(item) == 1:
            rname, settings = next(iter(item.items()))
            items.append((str(rname), settings or {}))
        else:
            raise ConfigError(f"{where}: each recipe must be a name or a one-key mapping "
                              f"{{name: {{settings}}}}, got {item!r}")
    return items


def parse_stage(raw: Any, index: int, earlier: list[str]) -> StageSpec:
    where = f"stage {index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with 'name' and 'recipes', got {raw!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        fail(where, "name", f"must be a non-empty stage name without '/', got {name!r}")
    where = f"stage '{name}'"
    if name in earlier:
        fail(where, "name", "is used by two stages")
    reject_unknown_keys(raw, ("name", "recipes", "train", "from", "cache", "seed"), where)
    source = raw.get("from")
    if source is not None and source not in earlier:
        fail(where, "from", f"must name an earlier stage ({', '.join(earlier) or 'none yet'}), got {source!r}")
    recipes = []
    for rname, settings in _recipe_items(raw.get("recipes"), where):
        cls = recipe_class(rname, where)
        recipes.append((rname, cls, parse_config(cls.Config, settings, f"{where} recipe '{rname}'")))
    gives_loss = [r for r, cls, c in recipes if cls.contributes_loss(c)]
    in_training = [r for r, cls, c in recipes if cls.requires_training(c)]
    trains = bool(gives_loss or in_training)
    if "train" in raw and not trains:
        fail(where, "train", "is set but no recipe trains; add finetune or a distill_* recipe to the stage")
    if in_training and not gives_loss:
        fail(where, "recipes", f"'{in_training[0]}' acts during training, which needs a loss: add finetune "
             "or a distill_* recipe to the stage")
    named: dict[str, str] = {}  # loss term -> the recipe that contributes it
    for r, cls, c in recipes:
        for term in sorted(cls.loss_term_names(c)):
            if term in named:
                hint = (" (a distillation recipe's alpha below 1 adds a label cross-entropy 'ce' of its own: "
                        "set alpha: 1 there, or drop the other recipe)") if term == "ce" and r != named[term] else ""
                fail(where, "recipes", f"'{named[term]}' and '{r}' both contribute the loss term '{term}'; keep one of "
                     f"them{hint}")
            named[term] = r
    frozen = [r for r, cls, _ in recipes if cls.inference_only]
    if frozen and trains:
        fail(where, "recipes", f"'{frozen[0]}' gives an inference-only model, so its stage cannot train; "
             "put it in a stage of its own")
    names = [r for r, _, _ in recipes]
    for rname, cls, c in recipes:
        cls.check_stage(c, StageCheck(stage=name, earlier=list(earlier), recipes=names, trains=trains,
                                      where=f"{where} recipe '{rname}'"))
    train = parse_config(TrainConfig, raw.get("train"), f"{where} train") if trains else None
    cache = raw.get("cache", False)
    if not isinstance(cache, bool):
        fail(where, "cache", f"must be true or false, got {cache!r}")
    seed = _seed(raw["seed"], where) if "seed" in raw else None
    return StageSpec(name=name, recipes=[(r, c) for r, _, c in recipes], train=train, source=source,
                     cache=cache, seed=seed)
