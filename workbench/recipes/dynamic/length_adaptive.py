"""`length_adaptive`: Length-Adaptive Transformer training (Kim & Cho, 2021, "Length-Adaptive
Transformer: Train Once with Length Drop, Use Anytime with Search"; Dynamic-TinyBERT, Guskin et
al., 2021), so that one model works at any per-layer sequence length.

Every step trains, besides the full-length model (the trainer's forward, taught by the stage's
other recipes: `finetune` or `distill_logits`, which is where a teacher comes in), sub-networks
that keep fewer tokens after each layer (the sandwich rule): the smallest configuration and
`num_sandwich` random ones drawn by LengthDrop, r_i = r_{i-1} * U(1 - p, 1) with p =
`length_drop_prob`. Each sub-network learns by in-place distillation from the full-length
model's logits (detached): term `length_kd`, T^2 KL averaged over the sub-networks. Tokens are
selected by attention significance (`workbench.models.dynamic`, the rule the runtime follows).

    - length_adaptive: {length_drop_prob: 0.2, num_sandwich: 2}
    - distill_logits: {teacher: teacher}

Drop-and-Restore (LAT's restoring of dropped tokens at the last layer) matters only for
token-level tasks (span extraction, tagging); the workbench's tasks are sequence
classification, where only [CLS] is read, so it is not implemented and nothing needs it.
Choose the configuration afterwards with `length_search`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.config import fail
from workbench.models.dynamic import DynamicSpec, dynamic_forward
from workbench.recipes.base import LossTerms, Recipe, StageCheck, TrainState, register_recipe
from workbench.recipes.dynamic.common import require_full_model_loss, soft_kl


MAX_SANDWICH = 16
"""Random sub-networks per step at most: a typo such as 200 would make each step 200 times slower."""


@dataclass
class LengthAdaptiveConfig:
    length_drop_prob: float = 0.2
    """p of LengthDrop: each layer keeps a fraction U(1 - p, 1) of the previous layer's ratio."""
    num_sandwich: int = 2
    """Random sub-networks per step, besides the smallest one."""
    min_ratio: float = 0.05
    """No layer keeps fewer than this fraction of the input tokens (at least [CLS] stays)."""
    smallest: bool = True
    """Train the smallest configuration, r_i = max(min_ratio, (1 - p)^(i+1)), every step."""
    temperature: float = 1.0
    weight: float = 1.0
    """Weight of the `length_kd` term."""

    def validate(self, where: str) -> None:
        if not 0.0 < self.length_drop_prob < 1.0:
            fail(where, "length_drop_prob", f"must be in (0, 1), got {self.length_drop_prob}")
        if not 0 <= self.num_sandwich <= MAX_SANDWICH:
            fail(where, "num_sandwich", f"must be in 0..{MAX_SANDWICH} (each random sub-network is one more forward "
                 f"and backward pass per step; the paper uses 2), got {self.num_sandwich}")
        if not self.smallest and self.num_sandwich == 0:
            fail(where, "num_sandwich", "is 0 and 'smallest' is false: no sub-network would train")
        if not 0.0 < self.min_ratio <= 1.0:
            fail(where, "min_ratio", f"must be in (0, 1], got {self.min_ratio}")
        if self.temperature <= 0:
            fail(where, "temperature", f"must be > 0, got {self.temperature}")
        if self.weight < 0:  # a negative loss weight trains the sub-networks away from the full model
            fail(where, "weight", f"must be >= 0, got {self.weight}")


def length_drop(num_layers: int, p: float, min_ratio: float, generator: torch.Generator) -> list[float]:
    """One LengthDrop configuration: r_i = r_{i-1} * U(1 - p, 1), floored at min_ratio."""
    u = torch.rand(num_layers, generator=generator).tolist()
    ratios, r = [], 1.0
    for x in u:
        r *= 1.0 - p * x
        ratios.append(max(min_ratio, r))
    return ratios


def smallest_config(num_layers: int, p: float, min_ratio: float) -> list[float]:
    return [max(min_ratio, (1.0 - p) ** (i + 1)) for i in range(num_layers)]


@register_recipe("length_adaptive")
class LengthAdaptive(Recipe):
    """LengthDrop + sandwich rule + in-place distillation (term `length_kd`)."""

    Config = LengthAdaptiveConfig
    uses_architecture = True

    @classmethod
    def contributes_loss(cls, config: LengthAdaptiveConfig) -> bool:
        return True

    @classmethod
    def loss_term_names(cls, config: LengthAdaptiveConfig) -> set[str]:
        return {"length_kd"}

    @classmethod
    def check_stage(cls, config: LengthAdaptiveConfig, check: StageCheck) -> None:
        require_full_model_loss(check, "length_adaptive")

    def on_train_begin(self, state: TrainState) -> None:
        from workbench.models.arch import architecture

        self.num_layers = architecture(state.model, self.where).num_layers

    def configs(self, step: int) -> list[list[float]]:
        """The sub-networks of one step: a pure function of (seed, step), so a resumed run
        trains the same ones."""
        c = self.config
        g = torch.Generator().manual_seed(self.ctx.seed * 1_000_003 + step)
        out = [smallest_config(self.num_layers, c.length_drop_prob, c.min_ratio)] if c.smallest else []
        out += [length_drop(self.num_layers, c.length_drop_prob, c.min_ratio, g) for _ in range(c.num_sandwich)]
        return out

    def loss_terms(self, state: TrainState) -> LossTerms:
        c, batch = self.config, state.batch
        full = state.outputs.logits
        losses = []
        for ratios in self.configs(state.step):
            sub = dynamic_forward(state.model, batch["input_ids"], batch.get("attention_mask"),
                                  DynamicSpec(length_ratios=ratios), batch.get("token_type_ids"))
            losses.append(soft_kl(sub, full, c.temperature))
        return {"length_kd": (c.weight, torch.stack(losses).mean())}
