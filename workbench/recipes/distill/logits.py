"""Logit distillation (Hinton, Vinyals & Dean, 2015), with any divergence from the loss registry.

    loss = alpha * T^2 * D(softmax(z_t / T), softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)

D is `loss:` from the registry (`kl` by default; `skew_kl` gives DistiLLM's skew KL, `js`,
`tvd`, ...). The T^2 factor keeps the soft-target gradients on the same scale as the hard-target
ones when the temperature changes. The terms are `kd_logits` and `ce`. The teacher is any
teacher the run can serve: an earlier stage, or a model name or local path (another tokenizer
works: the teacher reads the raw text).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from workbench.config import KEY_OMITS_DEFAULT, fail, fail_if_set
from workbench.recipes.base import LossTerms, TrainState, register_recipe
from workbench.recipes.class_weights import ClassWeights, validate_class_weights
from workbench.recipes.distill.losses import get_loss
from workbench.recipes.distill.teacher import TeacherRecipe


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton's distillation loss (batch mean), as one tensor."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


@dataclass
class LogitDistillConfig:
    teacher: str = "teacher"
    """An earlier stage's name, or a model name or local path."""
    temperature: float = 2.0
    alpha: float = 0.5
    """Weight of the soft (teacher) term; 1 - alpha weighs the labels (`ce`)."""
    loss: str = "kl"
    """Divergence from the loss registry: kl, reverse_kl, skew_kl, skew_reverse_kl, js, tvd, ..."""
    loss_args: dict[str, Any] = field(default_factory=dict)
    """Extra settings of the divergence, e.g. {alpha: 0.1} for skew_kl."""
    class_weights: ClassWeights = field(default=None, metadata=KEY_OMITS_DEFAULT)
    """Per-class weights of the `ce` term: null, "balanced" or one weight per class (as finetune's)."""

    def validate(self, where: str) -> None:
        validate_class_weights(self.class_weights, where)
        if self.temperature <= 0:
            fail(where, "temperature", f"must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            fail(where, "alpha", f"must be in [0, 1], got {self.alpha}")
        if self.alpha == 1.0:
            fail_if_set(self, where, ("class_weights",), "they weigh the label term 'ce', which alpha: 1 leaves out")
        get_loss(self.loss, f"{where}: 'loss'")


@register_recipe("distill_logits")
class LogitDistill(TeacherRecipe):
    """Match the teacher's softened output distribution."""

    Config = LogitDistillConfig

    @classmethod
    def loss_term_names(cls, config: LogitDistillConfig) -> set[str]:
        return {"kd_logits"} | ({"ce"} if config.alpha < 1.0 else set())

    def on_train_begin(self, state: TrainState) -> None:
        self.teacher = self.ctx.teachers.get(self.config.teacher, set(), self.where)
        self.divergence = get_loss(self.config.loss, self.where)

    def loss_terms(self, state: TrainState) -> LossTerms:
        c = self.config
        z_t = self.teacher.outputs(state.batch).logits
        soft = self.divergence(state.outputs.logits, z_t, temperature=c.temperature, **c.loss_args)
        terms = {"kd_logits": (c.alpha * c.temperature ** 2, soft)}
        if c.alpha < 1.0:
            terms["ce"] = (1.0 - c.alpha, F.cross_entropy(state.outputs.logits, state.batch["labels"], weight=self.class_weight_tensor()))
        return terms

    def on_train_end(self, state: TrainState) -> None:
        del self.teacher  # the service keeps it for later stages; this recipe is done with it
