"""`distill_progressive`: PROD's teacher and data progression (Lin et al., 2023, "PROD:
Progressive Distillation for Dense Retrieval"), for classification.

**Teachers of increasing strength.** `teachers:` lists them weakest first (e.g. a distilled
3-layer student, then the fine-tuned 6-layer teacher); the student learns from teacher k from
the fraction `switch_at[k-1]` of its optimizer steps on (default: equal shares). Each teacher
gives Hinton's KD term ``kd_logits`` (`loss:` from the registry at `temperature`, times T^2,
weighted by `alpha`) and the labels ``ce`` (1 - alpha): a smaller gap to bridge first.

**Data curriculum: toward disagreement.** From the fraction `curriculum_start` of training on,
each example's loss is weighted by how much teacher and student disagree on it:
w_i = (1 - f) + f * d_i / mean_batch(d), with d_i = KL(p_teacher || p_student) at T = 1 (no
gradient through w) and f rising linearly from 0 at `curriculum_start` to `focus` at the end.
The weights average 1 over a batch, so the loss scale stays put while its mass moves to the
examples the student still gets wrong relative to the teacher (PROD's data progression selects
such examples; `focus: 1` is fully proportional to disagreement, `curriculum_start: 1` turns it off).

Why loss weights, not sampling: the trainer's data order (`Trainer._order`) is a pure function of
the seed and the epoch, so a killed run resumes on the same batches, and no recipe hook changes
it. Weighting inside the batch needs no hook, depends only on the current model and the batch
(so resume stays exact), and with one epoch sampling would have to score the whole training set
with the student ahead of time anyway.

The current teacher (0-based) and f are logged each step as the terms ``prod_teacher`` and
``prod_focus`` (weight 0: logged, not summed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from workbench.config import fail
from workbench.recipes.base import LossTerms, StageCheck, TrainState, register_recipe
from workbench.recipes.distill.losses import get_loss
from workbench.recipes.distill.relations import row_kl
from workbench.recipes.distill.many_teachers import check_path_teachers, check_stage_teachers
from workbench.recipes.distill.teacher import TeacherRecipe


@dataclass
class ProgressiveConfig:
    teachers: list[str] = field(default_factory=list)
    """Weakest first: earlier stages, model names or paths (logits only, any tokenizer)."""
    switch_at: list[float] | None = None
    """Fractions of training where the next teacher takes over (len(teachers) - 1 increasing
    values in (0, 1)); None: equal shares."""
    temperature: float = 2.0
    alpha: float = 0.5
    loss: str = "kl"
    curriculum_start: float = 0.5
    focus: float = 1.0

    def validate(self, where: str) -> None:
        if not self.teachers:
            fail(where, "teachers", "must list the teachers weakest first, e.g. [student.kd, teacher]")
        if len(set(self.teachers)) != len(self.teachers):
            fail(where, "teachers", f"repeats a teacher: {self.teachers}")
        k = len(self.teachers)
        if self.switch_at is None:
            self.switch_at = [i / k for i in range(1, k)]
        if len(self.switch_at) != k - 1 or any(not 0 < s < 1 for s in self.switch_at) \
                or sorted(set(self.switch_at)) != list(self.switch_at):
            fail(where, "switch_at", f"must be {k - 1} increasing fractions in (0, 1) (one per teacher after the "
                 f"first), got {self.switch_at}")
        if self.temperature <= 0:
            fail(where, "temperature", f"must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            fail(where, "alpha", f"must be in [0, 1], got {self.alpha}")
        if not 0.0 <= self.curriculum_start <= 1.0:
            fail(where, "curriculum_start", f"must be in [0, 1] (1: no curriculum), got {self.curriculum_start}")
        if not 0.0 <= self.focus <= 1.0:
            fail(where, "focus", f"must be in [0, 1], got {self.focus}")
        get_loss(self.loss, f"{where}: 'loss'")


def disagreement_weights(z_t: torch.Tensor, z_s: torch.Tensor, focus: float) -> torch.Tensor:
    """Per-example weights (1 - f) + f * d_i / mean(d), d_i = KL(p_t || p_s) at T = 1, no gradient."""
    with torch.no_grad():
        d = row_kl(F.log_softmax(z_t.float(), -1), F.log_softmax(z_s.float(), -1)).clamp_min(0)
        mean = d.mean()
        rel = d / mean if mean > 0 else torch.ones_like(d)
        return (1.0 - focus) + focus * rel


@register_recipe("distill_progressive")
class ProgressiveDistill(TeacherRecipe):
    """A chain of teachers of growing strength, and loss weight moving to disagreements."""

    Config = ProgressiveConfig

    @classmethod
    def loss_term_names(cls, config: Any) -> set[str]:
        return {"kd_logits", "prod_teacher", "prod_focus"} | ({"ce"} if config.alpha < 1.0 else set())

    @classmethod
    def teacher_names(cls, config: Any) -> list[str]:
        return list(config.teachers)

    @classmethod
    def check_stage(cls, config: Any, check: StageCheck) -> None:
        check_stage_teachers([(n, f"teachers[{i}]") for i, n in enumerate(config.teachers)], check)

    @classmethod
    def check_task(cls, config: Any, task: Any, where: str) -> None:
        check_path_teachers([(n, f"teachers[{i}]") for i, n in enumerate(config.teachers)], where)

    def on_train_begin(self, state: TrainState) -> None:
        self.teachers_ = [self.ctx.teachers.get(n, set(), self.where) for n in self.config.teachers]
        self.divergence = get_loss(self.config.loss, self.where)

    def current(self, step: int, total: int) -> int:
        """Index of the teacher in charge at `step` of `total`."""
        return sum(1 for s in self.config.switch_at if step >= s * total)

    def focus_at(self, step: int, total: int) -> float:
        c = self.config
        frac = step / max(1, total)
        if c.curriculum_start >= 1.0 or frac < c.curriculum_start:
            return 0.0
        return c.focus * min(1.0, (frac - c.curriculum_start) / max(1e-9, 1.0 - c.curriculum_start))

    def loss_terms(self, state: TrainState) -> LossTerms:
        c, T = self.config, self.config.temperature
        k = self.current(state.step, state.total_steps)
        z_s = state.outputs.logits
        z_t = self.teachers_[k].outputs(state.batch).logits
        f = self.focus_at(state.step, state.total_steps)
        w = disagreement_weights(z_t, z_s, f) if f > 0 else torch.ones(z_s.shape[0])
        kd = self.divergence(z_s, z_t, mask=w, temperature=T) * w.mean()  # sum_i w_i kd_i / B
        terms: LossTerms = {"kd_logits": (c.alpha * T * T, kd)}
        if c.alpha < 1.0:
            ce = (F.cross_entropy(z_s, state.batch["labels"], reduction="none") * w).mean()
            terms["ce"] = (1.0 - c.alpha, ce)
        terms["prod_teacher"] = (0.0, torch.tensor(float(k)))
        terms["prod_focus"] = (0.0, torch.tensor(f))
        return terms

    def on_train_end(self, state: TrainState) -> None:
        self.__dict__.pop("teachers_", None)
