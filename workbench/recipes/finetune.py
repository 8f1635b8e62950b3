"""`finetune`: train the stage's model on the task labels: the cross-entropy term `ce`."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from workbench.config import fail
from workbench.recipes.base import LossTerms, Recipe, TrainState, register_recipe


@dataclass
class FinetuneConfig:
    label_smoothing: float = 0.0
    weight: float = 1.0
    """Weight of the `ce` term in the stage's loss."""

    def validate(self, where: str) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            fail(where, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")
        if self.weight < 0:
            fail(where, "weight", f"must be >= 0, got {self.weight}")


@register_recipe("finetune")
class Finetune(Recipe):
    """Supervised fine-tuning; the stage's `train:` block sets epochs, learning rate, etc."""

    Config = FinetuneConfig

    @classmethod
    def contributes_loss(cls, config: FinetuneConfig) -> bool:
        return True

    def loss_terms(self, state: TrainState) -> LossTerms:
        ce = F.cross_entropy(state.outputs.logits, state.batch["labels"],
                             label_smoothing=self.config.label_smoothing)
        return {"ce": (self.config.weight, ce)}
