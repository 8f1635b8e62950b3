"""Logit distillation (Hinton, Vinyals & Dean, 2015).

    loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y)

The T^2 factor keeps the soft-target gradients on the same scale as the hard-target ones when
the temperature changes. The teacher is the final model of an earlier stage, named in the config.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import fail
from workbench.recipes.base import Recipe, TrainState, register_recipe


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton's distillation loss (batch mean)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard


@dataclass
class LogitDistillConfig:
    teacher: str = "teacher"
    """Name of the earlier stage whose final model is the teacher."""
    temperature: float = 2.0
    alpha: float = 0.5
    """Weight of the soft (teacher) term; 1 - alpha weighs the labels."""

    def validate(self, where: str) -> None:
        if self.temperature <= 0:
            fail(where, "temperature", f"must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            fail(where, "alpha", f"must be in [0, 1], got {self.alpha}")


@register_recipe("distill_logits")
class LogitDistill(Recipe):
    """Match the teacher's softened output distribution."""

    Config = LogitDistillConfig
    needs_training = True

    def on_train_begin(self, state: TrainState) -> None:
        where = f"stage '{self.ctx.stage}' recipe 'distill_logits'"
        if self.config.teacher not in self.ctx.previous_stages:
            fail(where, "teacher", f"names no earlier stage: '{self.config.teacher}' "
                 f"(earlier stages: {self.ctx.previous_stages or 'none'})")
        # The teacher is another stage's model, shared: switch it to eval mode but leave its
        # parameters alone (a later stage may train from it); its forward runs under no_grad.
        self.teacher: nn.Module = self.ctx.load_stage_model(self.config.teacher).eval()

    def _teacher_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's logits, memoised per example: the teacher is frozen and in eval mode,
        so after the first epoch (and in later stages distilling from the same teacher) its
        forward pass is a lookup. Keys are the example's unpadded token ids."""
        cache: dict[bytes, torch.Tensor] = self.teacher.__dict__.setdefault("_workbench_logit_cache", {})
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        keys = [(row[m.bool()] if mask is not None else row).numpy().tobytes()
                for row, m in zip(ids, mask if mask is not None else ids)]
        missing = [i for i, k in enumerate(keys) if k not in cache]
        if missing:
            sub = {k: v[missing] for k, v in batch.items() if k != "labels"}
            with torch.no_grad():
                out = self.teacher(**sub).logits.float()
            for i, row in zip(missing, out):
                cache[keys[i]] = row
        return torch.stack([cache[k] for k in keys])

    def compute_loss(self, state: TrainState, loss: torch.Tensor) -> torch.Tensor:
        batch = state.batch
        return kd_loss(state.outputs.logits, self._teacher_logits(batch), batch["labels"],
                       self.config.temperature, self.config.alpha)

    def on_train_end(self, state: TrainState) -> None:
        del self.teacher  # free its memory before the next stage
