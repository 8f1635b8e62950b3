"""`distill_multihead`: DistilHuBERT's layer-wise prediction heads (Chang, Yang & Lee, 2022,
"DistilHuBERT: Speech Representation Learning by Layer-wise Distillation of Hidden-unit BERT").

One student layer (default: the last) feeds a separate prediction head per chosen teacher layer;
head t predicts teacher layer t's hidden states token by token. The loss of each head, a term
``head_l{t}`` (t the 1-based teacher layer), is the paper's

    l1_weight * mean_d |h_t - h^_t|  +  cos_weight * (-log sigmoid(cos(h_t, h^_t)))

averaged over real tokens (padding is masked out of both parts); the terms add up over heads.
Default teacher layers: every (N/3)-th of an N-layer teacher ([2, 4, 6] for 6 layers, [4, 8, 12]
for 12, as DistilHuBERT predicts layers 4, 8 and 12 of HuBERT).

The heads (one Linear student_hidden -> teacher_hidden each, or a 2-layer MLP with
``head_hidden`` units) are the recipe's owned parameters: created in `setup`, trained with the
stage, saved in its checkpoints and restored on resume, and never attached to the student, so
the saved model does not contain them ("the heads are dropped after training").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import fail
from workbench.recipes.base import LossTerms, TrainState, register_recipe
from workbench.recipes.distill.minilm import resolve_layer
from workbench.recipes.distill.teacher import TeacherRecipe

__all__ = ["MultiHeadDistill", "MultiHeadDistillConfig", "default_teacher_layers", "head_loss"]


def default_teacher_layers(num_layers: int) -> list[int]:
    """Every (N/3)-th layer, 1-based: [2, 4, 6] of 6, [4, 8, 12] of 12, [1, 3, 4] of 4, [1] of 1."""
    return sorted({max(1, round(num_layers * k / 3)) for k in (1, 2, 3)})


def head_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
              l1_weight: float = 1.0, cos_weight: float = 1.0) -> torch.Tensor:
    """DistilHuBERT's per-head loss over [B, L, D] predictions and targets, mean over real tokens:
    l1_weight * mean_d |target - pred| + cos_weight * (-log sigmoid(cos(target, pred)))."""
    per_token = l1_weight * (pred - target).abs().mean(-1) \
        - cos_weight * F.logsigmoid(F.cosine_similarity(pred, target, dim=-1, eps=1e-8))
    if mask is None:
        return per_token.mean()
    m = mask.to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0)


@dataclass
class MultiHeadDistillConfig:
    teacher: str = "teacher"
    """An earlier stage's name, or a model name or local path (same tokenizer as the student)."""
    teacher_layers: list[int] | None = None
    """1-based teacher layers to predict (negative: from the end). Default: every (N/3)-th."""
    student_layer: int = -1
    """1-based student layer feeding the heads; negative counts from the end (-1 = last)."""
    l1_weight: float = 1.0
    cos_weight: float = 1.0
    """lambda of the cosine part, -log sigmoid(cos)."""
    head_hidden: int | None = None
    """None: each head is one Linear; else a 2-layer MLP (Linear, GELU, Linear) this wide."""

    def validate(self, where: str) -> None:
        if self.teacher_layers is not None and (not self.teacher_layers or 0 in self.teacher_layers):
            fail(where, "teacher_layers", f"must be a non-empty list of 1-based layer numbers (negative: from "
                 f"the end), got {self.teacher_layers}")
        if self.student_layer == 0:
            fail(where, "student_layer", "must be a 1-based layer number or negative from the end (-1 = last), got 0")
        for key in ("l1_weight", "cos_weight"):
            if getattr(self, key) < 0:
                fail(where, key, f"must be >= 0, got {getattr(self, key)}")
        if self.l1_weight == 0 and self.cos_weight == 0:
            fail(where, "l1_weight", "and 'cos_weight' are both 0: the heads would learn nothing")
        if self.head_hidden is not None and self.head_hidden < 1:
            fail(where, "head_hidden", f"must be >= 1, got {self.head_hidden}")


@register_recipe("distill_multihead")
class MultiHeadDistill(TeacherRecipe):
    """Predict several teacher layers from one student layer through owned prediction heads."""

    Config = MultiHeadDistillConfig
    uses_architecture = True

    @classmethod
    def layer_numbers(cls, config: MultiHeadDistillConfig) -> list[tuple[str | None, str, int]]:
        return [(None, "student_layer", config.student_layer),
                *((config.teacher, "teacher_layers", t) for t in config.teacher_layers or [])]

    @classmethod
    def teacher_reads(cls, config: MultiHeadDistillConfig) -> dict[str, set[str]]:
        return {config.teacher: {"hidden_states", "layers"}}

    def needs(self) -> set[str]:
        return {"hidden_states"}

    def setup(self, model: nn.Module) -> None:
        from workbench.models.arch import architecture

        c, where = self.config, self.where
        self.teacher = self.ctx.teachers.get(c.teacher, self.needs(), where)
        s_arch = architecture(model, f"{where}: student")
        t_arch = architecture(self.teacher.model, f"{where}: teacher '{c.teacher}'")
        self.s_index = resolve_layer(c.student_layer, s_arch.num_layers, where, "student_layer", "student")
        wanted = c.teacher_layers if c.teacher_layers is not None else default_teacher_layers(t_arch.num_layers)
        self.t_layers = [resolve_layer(t, t_arch.num_layers, where, "teacher_layers", f"teacher '{c.teacher}'") + 1
                         for t in wanted]  # 1-based: hidden_states[t] is layer t's output
        if len(set(self.t_layers)) != len(self.t_layers):
            fail(where, "teacher_layers", f"names a layer twice: {wanted} -> {self.t_layers}")
        d_s, d_t = s_arch.hidden_size, t_arch.hidden_size

        def head() -> nn.Module:
            if c.head_hidden is None:
                return nn.Linear(d_s, d_t)
            return nn.Sequential(nn.Linear(d_s, c.head_hidden), nn.GELU(), nn.Linear(c.head_hidden, d_t))

        param = next(model.parameters())
        self.owned = nn.ModuleDict({f"l{t}": head() for t in self.t_layers}).to(param.device)

    def loss_terms(self, state: TrainState) -> LossTerms:
        c = self.config
        mask = state.outputs.attention_mask
        h_s = state.outputs.hidden_states[self.s_index + 1]
        h_t = self.teacher.outputs(state.batch).hidden_states
        return {f"head_l{t}": (1.0, head_loss(self.owned[f"l{t}"](h_s), h_t[t].float(), mask,
                                              c.l1_weight, c.cos_weight))
                for t in self.t_layers}

    def on_train_end(self, state: TrainState) -> None:
        self.__dict__.pop("teacher", None)  # the service keeps it for later stages
