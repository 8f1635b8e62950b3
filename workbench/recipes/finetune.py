"""`finetune`: train the stage's model on the task labels (cross-entropy)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from workbench.config import fail
from workbench.recipes.base import Recipe, TrainState, register_recipe


@dataclass
class FinetuneConfig:
    label_smoothing: float = 0.0

    def validate(self, where: str) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            fail(where, "label_smoothing", f"must be in [0, 1), got {self.label_smoothing}")


@register_recipe("finetune")
class Finetune(Recipe):
    """Supervised fine-tuning; the stage's `train:` block sets epochs, learning rate, etc."""

    Config = FinetuneConfig
    needs_training = True

    def compute_loss(self, state: TrainState, loss: torch.Tensor) -> torch.Tensor:
        if self.config.label_smoothing == 0.0:
            return loss
        return F.cross_entropy(state.outputs.logits, state.batch["labels"],
                               label_smoothing=self.config.label_smoothing)
