"""The recipe API: a small class with one job, a typed `Config`, registered by name.

A recipe acts in one or more of these ways (as Distiller's policies do at scheduler hooks):

* one-shot: `apply(model) -> model` runs when its stage starts (build a student, prune once,
  quantize, compile for the runtime);
* as a source of **named loss terms**: `loss_terms(state) -> {name: (weight, value)}`; the
  trainer sums `weight * value` over every recipe of the stage, logs each term per step and
  fails when two recipes contribute the same name;
* during training: hooks at train/epoch/step begin and end and right after every optimizer
  step (where pruning masks are re-applied).

What a recipe needs is declared, not guessed: `needs()` names the extra forward outputs
(`hidden_states`, `attentions`, `qkv`) the trainer must request from the student (a teacher is
asked through `ctx.teachers`); parameters a recipe owns (projections, prediction heads) are
created in `setup(model)` as `self.owned` (an `nn.Module`), which the trainer adds to the
optimizer, the LR schedule and the checkpoint before any checkpoint is restored; they are not
part of the saved model. Checks that involve other stages (a teacher that must exist, a stage
that must train) live in the recipe's classmethods `check_stage`, `contributes_loss` and
`requires_training`, called while the pipeline is validated, before any work.

Recipes that keep state across steps (masks, schedules) expose `state_dict()` /
`load_state_dict()` so a killed run resumes exactly.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

from workbench.config import ConfigError, parse_config
from workbench.recipes.class_weights import check_class_weights, class_weights
from workbench.recipes.shapes import Shapes, check_layer_numbers

if TYPE_CHECKING:  # pragma: no cover
    from workbench.data import Task
    from workbench.forward import ForwardOutputs
    from workbench.teachers import TeacherService

# What a recipe may ask of the forward pass, beyond the logits every step computes.
FORWARD_NEEDS = ("hidden_states", "attentions", "qkv")

LossTerms = dict[str, tuple[float, torch.Tensor]]


@dataclass
class StageCheck:
    """What a recipe may check about its stage while the pipeline is validated."""

    stage: str
    earlier: list[str]
    """Names of the stages before this one."""
    recipes: list[str]
    """Names of the recipes in this stage, in order."""
    trains: bool
    where: str
    """Prefix for error messages: "stage 'x' recipe 'y'"."""


@dataclass
class RecipeContext:
    """What a recipe may read about the run it is part of."""

    task: "Task"
    tokenizer: Any
    """The stage's tokenizer. A recipe that changes the vocabulary (`trim_vocab`) replaces it in
    `apply`; the pipeline then re-tokenizes the stage's data with it (`train_data` too), measures
    and saves the stage with it, and later stages start from it."""
    run_dir: Path
    stage: str
    seed: int = 0
    quick: bool = False
    teachers: "TeacherService | None" = None
    """Teachers by name: an earlier stage, or any model name or local path."""
    previous_stages: list[str] = field(default_factory=list)
    train_data: Any = None
    """The stage's tokenized training split (recipes that change the data replace it in
    `prepare_data`)."""

    @property
    def where(self) -> str:
        return f"stage '{self.stage}'"


@dataclass
class TrainState:
    """The trainer's live state, handed to every hook."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int  # optimizer steps completed so far in this stage
    total_steps: int
    epoch: int
    steps_per_epoch: int
    batch: dict[str, Any] | None = None
    outputs: "ForwardOutputs | None" = None
    loss: torch.Tensor | None = None
    logs: dict[str, float] = field(default_factory=dict)


class Recipe:
    """Base class. Subclasses set `Config` and override what they need."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    inference_only: ClassVar[bool] = False
    """True when the recipe's result is an inference-only model (quantized, compiled): its stage
    must not train."""
    uses_architecture: ClassVar[bool] = False
    """True when the recipe reads the model's layout (layers, heads, FFNs) through the
    architecture adapter: the pipeline then checks the model family before any training."""
    frozen_result: ClassVar[bool] = False
    """True when the recipe's result is no longer a float model (quantized, compiled): a later
    stage built on it can only add inference-only recipes; the pipeline checks this before any
    training."""
    logits_only_result: ClassVar[bool] = False
    """True when the recipe's result gives logits and nothing else (the compiled runtime): the
    pipeline refuses, before any training, a later stage that reads more from it as a teacher
    (`teacher_reads`)."""
    replaces_vocabulary: ClassVar[bool] = False
    """True when the recipe gives its stage a tokenizer of its own (`trim_vocab`): the pipeline
    then checks, before any training, that no later stage distils across the two vocabularies."""

    def __init__(self, config: Any, ctx: RecipeContext) -> None:
        self.config = config
        self.ctx = ctx
        self.owned: nn.Module | None = None

    def lr_scales(self) -> dict[str, float]:
        """Model parameter-name prefix -> multiplier of the stage's learning rate, for parameters
        this recipe adds to the model and that start from scratch (e.g. exit heads: a new head
        learns nothing in one epoch at a fine-tuning rate). Read when the optimizer is built."""
        return {}

    @property
    def where(self) -> str:
        return f"stage '{self.ctx.stage}' recipe '{self.name}'"

    # --- validation (classmethods: run on the config alone, before any work) ---------------
    @classmethod
    def contributes_loss(cls, config: Any) -> bool:
        """True when the recipe gives loss terms (its stage then trains)."""
        return False

    @classmethod
    def loss_term_names(cls, config: Any) -> set[str]:
        """Names of the loss terms the recipe contributes whatever the batch, known from its
        config alone: a stage where two recipes name the same term is refused when the recipe is
        read (the trainer found it at the stage's first step, after the earlier stages trained).
        Empty: not declared (terms named per layer or per teacher); the trainer still checks."""
        return set()

    @classmethod
    def requires_training(cls, config: Any) -> bool:
        """True when the recipe acts during training (e.g. gradual pruning) and so needs a stage
        that trains, with a loss from some recipe."""
        return cls.contributes_loss(config)

    @classmethod
    def check_stage(cls, config: Any, check: StageCheck) -> None:
        """Cross-stage checks (a teacher that must exist, ...); raise ConfigError via `fail`."""

    @classmethod
    def check_task(cls, config: Any, task: "Task", where: str) -> None:
        """Checks that need the loaded task (called by the pipeline before any work). The default
        checks the shared `class_weights` setting: one weight per class."""
        check_class_weights(getattr(config, "class_weights", None), task.num_labels, where)

    @classmethod
    def check_model(cls, config: Any, model: nn.Module, where: str) -> None:
        """Checks against the pipeline's starting model, before any stage runs. The default: every
        `targets` entry names some module of it (exact name or `re:` full match). Later stages'
        module names are a subset of the starting model's (students and pruning keep the names),
        so an entry matching nothing here matches nothing later either: fail now, not after the
        earlier stages trained. Each recipe still resolves its targets precisely when it runs."""
        targets = getattr(config, "targets", None)
        if targets:
            from workbench.targets import resolve_targets

            resolve_targets(model, list(targets), where, kind=nn.Module)

    @classmethod
    def output_depth(cls, config: Any, depth: int) -> int:
        """Encoder layers after this recipe, given `depth` before it (a student changes it)."""
        return depth

    @classmethod
    def output_width(cls, config: Any, width: int | None) -> int | None:
        """Every layer's query/key/value width after this recipe, given `width` before it (None:
        not one known number). A narrower student sets it; pruning that removes heads makes it
        None (layers may then differ)."""
        return width

    @classmethod
    def layer_numbers(cls, config: Any) -> list[tuple[str | None, str, int]]:
        """The 1-based layer numbers the config names (negative from the end, 0 the embeddings),
        as (teacher name, or None for the stage's own model; setting; number)."""
        return []

    @classmethod
    def check_shapes(cls, config: Any, shapes: Shapes, where: str) -> None:
        """Settings sized by depth or width against what the pipeline knows before any work (`Shapes`). The
        default checks `layer_numbers`; recipes with other layer settings override it."""
        check_layer_numbers(cls.layer_numbers(config), shapes, where)

    @classmethod
    def teacher_names(cls, config: Any) -> list[str]:
        """Teachers this recipe will ask for (earlier stages or model names/paths)."""
        return []

    @classmethod
    def teacher_reads(cls, config: Any) -> dict[str, set[str]]:
        """Teacher name -> what the recipe reads from that teacher besides its logits, known from
        the config alone: forward outputs ('hidden_states', 'attentions', 'qkv') or 'layers' (its
        layout, through the architecture adapter)."""
        return {name: set() for name in cls.teacher_names(config)}

    # --- one-shot ---------------------------------------------------------------------------
    def apply(self, model: nn.Module) -> nn.Module:
        return model

    def prepare_data(self, train_data: Any) -> Any:
        """Return the training split this stage trains on (data augmentation replaces it)."""
        return train_data

    # --- training ---------------------------------------------------------------------------
    def needs(self) -> set[str]:
        """Extra forward outputs of the student this recipe reads (see FORWARD_NEEDS)."""
        return set()

    def setup(self, model: nn.Module) -> None:
        """Create owned parameters (set `self.owned`); called before the optimizer is built and
        before a checkpoint is restored."""

    def loss_terms(self, state: TrainState) -> LossTerms:
        """Named loss terms `{name: (weight, value)}` for this step."""
        return {}

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_epoch_begin(self, state: TrainState) -> None: ...
    def on_step_begin(self, state: TrainState) -> None: ...
    def on_after_optimizer_step(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...

    def class_weight_tensor(self) -> torch.Tensor | None:
        """The recipe's `class_weights` setting (null, "balanced" or one weight per class) as the
        `weight` of a cross-entropy term; "balanced" is n_samples / (n_classes * count_c) over the
        stage's training split (`ctx.train_data`). Computed once, then cached."""
        if not hasattr(self, "_class_weights"):
            self._class_weights = class_weights(getattr(self.config, "class_weights", None), self.ctx, self.where)
        return self._class_weights

    # --- resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


RECIPES: dict[str, type[Recipe]] = {}


def register_recipe(name: str) -> Callable[[type[Recipe]], type[Recipe]]:
    """Class decorator: make a recipe selectable by `name` from YAML or Python."""

    def deco(cls: type[Recipe]) -> type[Recipe]:
        old = RECIPES.get(name)
        # the same class defined again (a re-imported plugin, a re-run notebook cell) replaces itself
        if old is not None and old is not cls and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"recipe name '{name}' is registered twice")
        cls.name = name
        RECIPES[name] = cls
        return cls

    return deco


def recipe_class(name: str, where: str) -> type[Recipe]:
    from workbench import recipes as _all  # noqa: F401  (registers the built-in recipes)

    if name not in RECIPES:
        close = difflib.get_close_matches(name, list(RECIPES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"{where}: unknown recipe '{name}'{hint} (known: {', '.join(sorted(RECIPES))})"
        )
    return RECIPES[name]


def build_recipe(name: str, settings: dict[str, Any] | None, ctx: RecipeContext, where: str) -> Recipe:
    cls = recipe_class(name, where)
    return cls(parse_config(cls.Config, settings, f"{where} recipe '{name}'"), ctx)
