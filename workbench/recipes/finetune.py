"""`finetune`: train the stage's model on the task labels: the cross-entropy term `ce`, optionally
weighted per class (`class_weights`: "balanced" or one weight per class) for imbalanced tasks."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F

from workbench.config import KEY_OMITS_DEFAULT, fail
from workbench.recipes.base import LossTerms, Recipe, TrainState, register_recipe
from workbench.recipes.class_weights import ClassWeights, validate_class_weights


@dataclass
class FinetuneConfig:
    label_smoothing: float = 0.0
    weight: float = 1.0
    """Weight of the `ce` term in the stage's loss."""
    class_weights: ClassWeights = field(default=None, metadata=KEY_OMITS_DEFAULT)
    """Per-class weights of the cross-entropy: null (none), "balanced" (n_samples / (n_classes *
    count_c) on the stage's training split) or a list of one weight per class, in label order."""

    def validate(self, where: str) -> None:
        validate_class_weights(self.class_weights, where)
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

    @classmethod
    def loss_term_names(cls, config: FinetuneConfig) -> set[str]:
        return {"ce"}

    def on_train_begin(self, state: TrainState) -> None:
        self.class_weight_tensor()  # a wrong number of class weights fails here, before any step

    def loss_terms(self, state: TrainState) -> LossTerms:
        ce = F.cross_entropy(state.outputs.logits, state.batch["labels"], weight=self.class_weight_tensor(),
                             label_smoothing=self.config.label_smoothing)
        return {"ce": (self.config.weight, ce)}
