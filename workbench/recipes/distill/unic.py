"""`distill_unic`: UNIC's ladder of expendable projectors and teacher dropping (Sariyildiz,
Weinzaepfel, Lucas, Larlus & Kalantidis, 2024, "UNIC: Universal Classification Models via
Multi-teacher Distillation"; the authors' code: naver/unic).

Per teacher, a ladder of projector heads: one small MLP (Linear, GELU, Linear; `head_hidden`
units) on each chosen student layer's pooled output (`ladder`, 1-based layers, default every
layer; `pooling` mean over real tokens or [CLS]); the teacher's prediction is the *sum* of its
heads' outputs, as in UNIC's LP module, so intermediate layers feed the distillation directly.
It predicts the teacher's pooled last hidden states (`target: features`, loss
0.5 * (1 - cos) + 0.5 * smooth-L1, UNIC's) or its logits (`target: logits`, KL at T, times T^2).
One term ``unic_<label>`` per teacher, weighted by the entries' `weight` (renormalised over the
teachers kept in the step) times `alpha`; ``ce`` (1 - alpha) trains the student's own classifier
on the labels. Teacher dropping (`teacher_drop`, UNIC's default 0.5): as in
`distill_multi_teacher` (the teacher with the highest loss is always kept; drawn per step).

The heads are the recipe's owned parameters: trained and checkpointed with the stage, never part
of the student, so the saved model does not contain them ("dropped after training"). UNIC also
standardises each teacher's features with running statistics; that is left out here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import fail
from workbench.recipes.base import LossTerms, TrainState, register_recipe
from workbench.recipes.distill.minilm import resolve_layer
from workbench.recipes.distill.many_teachers import ManyTeachers, TeacherEntry, keep_mask, validate_many
from workbench.recipes.distill.relations import row_kl
from workbench.teacher_similarity import pool


@dataclass
class UnicConfig:
    teachers: list[str | TeacherEntry] = field(default_factory=list)
    ladder: list[int] | None = None
    """1-based student layers feeding each teacher's heads (negative: from the end); None: all."""
    head_hidden: int = 256
    pooling: Literal["mean", "cls"] = "cls"
    """UNIC predicts the teachers' [CLS] token from the student's [CLS] tokens."""
    temperature: float = 2.0
    alpha: float = 0.5
    teacher_drop: float = 0.5

    def validate(self, where: str) -> None:
        validate_many(self, where)
        if self.ladder is not None and (not self.ladder or 0 in self.ladder):
            fail(where, "ladder", f"must be a non-empty list of 1-based student layers (negative: from the end), "
                 f"got {self.ladder}")
        if self.head_hidden < 1:
            fail(where, "head_hidden", f"must be >= 1, got {self.head_hidden}")


def unic_feature_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """UNIC's per-teacher loss: 0.5 * (1 - cosine) + 0.5 * smooth-L1, batch mean."""
    cos = 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-8).mean()
    return 0.5 * cos + 0.5 * F.smooth_l1_loss(pred, target)


@register_recipe("distill_unic")
class UnicDistill(ManyTeachers):
    """Per-teacher ladders of projector heads on several student layers, with teacher dropping."""

    Config = UnicConfig
    uses_architecture = True

    @classmethod
    def loss_term_names(cls, config: UnicConfig) -> set[str]:
        return {"ce"} if config.alpha < 1.0 else set()  # (and one term per teacher, named by its label)

    def needs(self) -> set[str]:
        return {"hidden_states"}

    def setup(self, model: nn.Module) -> None:
        from workbench.models.arch import architecture

        c = self.config
        self.teachers_ = self._load()
        s_arch = architecture(model, self.where)
        n = s_arch.num_layers
        rungs = c.ladder if c.ladder is not None else list(range(1, n + 1))
        self.rungs = sorted({resolve_layer(l, n, self.where, "ladder", "student") + 1 for l in rungs})
        d_s = s_arch.hidden_size

        def head(d_out: int) -> nn.Module:
            return nn.Sequential(nn.Linear(d_s, c.head_hidden), nn.GELU(), nn.Linear(c.head_hidden, d_out))

        heads = {}
        for e, t in zip(c.teachers, self.teachers_):
            d_out = (architecture(t.model, f"{self.where} teacher '{e.name}'").hidden_size if e.target == "features"
                     else model.config.num_labels)
            heads[e.label] = nn.ModuleDict({f"l{l}": head(d_out) for l in self.rungs})
        self.owned = nn.ModuleDict(heads).to(next(model.parameters()).device)

    def predict(self, label: str, hidden: tuple[torch.Tensor, ...], mask: torch.Tensor | None) -> torch.Tensor:
        """Teacher `label`'s prediction: the sum of its heads over the ladder's pooled layers."""
        return sum(self.owned[label][f"l{l}"](pool(hidden[l], mask, self.config.pooling)) for l in self.rungs)

    def loss_terms(self, state: TrainState) -> LossTerms:
        c, T = self.config, self.config.temperature
        hidden, mask = state.outputs.hidden_states, state.outputs.attention_mask
        per = []
        for i, e in enumerate(c.teachers):
            target = self._teacher_target(i, state)
            pred = self.predict(e.label, hidden, mask)
            if e.target == "logits":
                per.append(row_kl(F.log_softmax(target / T, -1), F.log_softmax(pred / T, -1)).mean())
            else:
                per.append(unic_feature_loss(pred, target))
        keep = keep_mask([float(v.detach()) for v in per], c.teacher_drop, self.ctx.seed, state.step)
        total = sum(e.weight for e, k in zip(c.teachers, keep) if k) or 1.0
        terms: LossTerms = {}
        for e, k, v in zip(c.teachers, keep, per):
            scale = c.alpha * (T * T if e.target == "logits" else 1.0)
            terms[f"unic_{e.label}"] = (scale * e.weight / total, v) if k else (0.0, v.detach())
        if c.alpha < 1.0:
            terms["ce"] = (1.0 - c.alpha, F.cross_entropy(state.outputs.logits, state.batch["labels"]))
        return terms
