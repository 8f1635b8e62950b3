"""The recipe API: a small class with one job, a typed `Config`, registered by name.

A recipe acts in one or both of two ways (as Distiller's policies do at scheduler hooks):

* one-shot: `apply(model) -> model` runs when its stage starts (build a student, prune once,
  quantize, compile for the runtime);
* during training: the trainer calls the hooks below at train/epoch/step begin and end, lets
  each recipe rewrite the loss (`compute_loss`), and calls `on_after_optimizer_step` right after
  every optimizer step (where pruning masks are re-applied).

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

if TYPE_CHECKING:  # pragma: no cover
    from workbench.data import Task


@dataclass
class RecipeContext:
    """What a recipe may read about the run it is part of."""

    task: "Task"
    tokenizer: Any
    run_dir: Path
    stage: str
    seed: int = 0
    quick: bool = False
    # Loads the final model of an earlier stage by name (e.g. the teacher for distillation).
    load_stage_model: Callable[[str], nn.Module] | None = None
    previous_stages: list[str] = field(default_factory=list)


@dataclass
class TrainState:
    """The trainer's live state, handed to every hook."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int  # optimizer steps completed so far in this stage
    total_steps: int
    epoch: int
    steps_per_epoch: int
    batch: dict[str, torch.Tensor] | None = None
    outputs: Any = None
    loss: torch.Tensor | None = None
    logs: dict[str, float] = field(default_factory=dict)


class Recipe:
    """Base class. Subclasses set `name`, `Config` and override what they need."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    # True when the recipe only makes sense inside a training loop (its stage must train).
    needs_training: ClassVar[bool] = False

    def __init__(self, config: Any, ctx: RecipeContext) -> None:
        self.config = config
        self.ctx = ctx

    # --- one-shot ---------------------------------------------------------------------------
    def apply(self, model: nn.Module) -> nn.Module:
        return model

    # --- training hooks ---------------------------------------------------------------------
    def on_train_begin(self, state: TrainState) -> None: ...
    def on_epoch_begin(self, state: TrainState) -> None: ...
    def on_step_begin(self, state: TrainState) -> None: ...

    def compute_loss(self, state: TrainState, loss: torch.Tensor) -> torch.Tensor:
        """Return the loss to optimise; `state.outputs` and `state.batch` hold this step."""
        return loss

    def on_after_optimizer_step(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...

    # --- resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


RECIPES: dict[str, type[Recipe]] = {}


def register_recipe(name: str) -> Callable[[type[Recipe]], type[Recipe]]:
    """Class decorator: make a recipe selectable by `name` from YAML or Python."""

    def deco(cls: type[Recipe]) -> type[Recipe]:
        if name in RECIPES and RECIPES[name] is not cls:
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
