"""`distill_multi_teacher`: learn from several teachers at once.

Each entry of `teachers:` is a name (an earlier stage, a model name or a local path: each teacher
keeps its own tokenizer) or {name, weight, target, label}. A teacher's `target` is

* ``logits`` -- its soft targets at temperature T (it must predict the task's classes: a local
  model folder with another number of classes fails before any work);
* ``features`` -- its last hidden states pooled (mean over real tokens, or [CLS]), predicted from
  the student's pooled last layer through an owned linear projector (dropped after training).
  This is how a teacher fine-tuned on *another* task (BBC News topics for a sentiment student)
  teaches: its features, not its classes (DistillNearest / DistillWeighted distil features).

Weights (`weighting`): ``fixed`` (the entries' `weight`), ``learned`` (softmax of owned logits,
initialised at the fixed weights; note that minimising the loss over the weights favours the
teacher that is easiest to match), or ``similarity`` (softmax(score / similarity_temperature)
of each teacher's transferability score on this stage's training texts, see
`workbench.teacher_similarity`; `similarity_top: 1` is DistillNearest; the scores and weights
are written to `<run>/teacher_selection/<stage>.csv`).

`combine`: ``ensemble`` (Baby Llama: Timiryasov & Tastet, 2023): one term ``kd_ensemble``,
KL(target || student) at T with target = the weighted mean of the logit teachers' probabilities
softmax(z_i / T) (``average: probs``, the default), or softmax of the weighted mean of their logits
(``average: logits``, what Baby Llama's code does). ``per_teacher``: a term ``kd_<label>`` per
teacher. Feature teachers always give a term ``feat_<label>``. Weights are renormalised over the
teachers that take part in the step; every teacher term is scaled by `alpha` (T^2 on logit terms),
and ``ce`` by 1 - alpha.

Teacher dropping (UNIC: Sariyildiz et al., 2024): with `teacher_drop` p, each teacher except the
one with the highest loss this step is dropped with probability p: it contributes no loss and no
gradient in that step. UNIC draws this per image; here it is drawn per step (from the stage's seed
and the step, so a resumed run draws the same).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import ConfigError, fail
from workbench.recipes.base import LossTerms, TrainState, register_recipe
from workbench.recipes.distill.losses import get_loss
from workbench.recipes.distill.many_teachers import (
    FEATURE_READS, ManyTeachers, TeacherEntry, keep_mask, validate_many)
from workbench.recipes.distill.relations import row_kl
from workbench.teacher_similarity import pool


@dataclass
class MultiTeacherConfig:
    teachers: list[str | TeacherEntry] = field(default_factory=list)
    weighting: Literal["fixed", "learned", "similarity"] = "fixed"
    combine: Literal["ensemble", "per_teacher"] = "ensemble"
    average: Literal["probs", "logits"] = "probs"
    """How `ensemble` mixes the logit teachers: mean of probabilities, or of logits."""
    temperature: float = 2.0
    alpha: float = 0.5
    """Weight of the teacher terms; 1 - alpha weighs the labels (`ce`)."""
    teacher_drop: float = 0.0
    """UNIC's teacher dropping probability (0: off)."""
    pooling: Literal["mean", "cls"] = "mean"
    feature_loss: str = "cosine"
    """Loss-registry name for feature teachers (cosine, mse, ...)."""
    similarity: Literal["logme", "knn"] = "logme"
    similarity_temperature: float = 0.1
    similarity_top: int | None = None
    """Distil from the best k teachers by score only (1: DistillNearest; None: all, weighted)."""
    similarity_examples: int = 1000

    def validate(self, where: str) -> None:
        validate_many(self, where)
        if self.similarity_temperature <= 0:
            fail(where, "similarity_temperature", f"must be > 0, got {self.similarity_temperature}")
        if self.similarity_top is not None and self.similarity_top < 1:
            fail(where, "similarity_top", f"must be >= 1 or null, got {self.similarity_top}")
        if self.similarity_examples < 2:
            fail(where, "similarity_examples", f"must be >= 2, got {self.similarity_examples}")
        get_loss(self.feature_loss, f"{where}: 'feature_loss'")


@register_recipe("distill_multi_teacher")
class MultiTeacherDistill(ManyTeachers):
    """Several teachers: an ensemble of soft targets or a term per teacher, with fixed, learned or
    similarity-based weights and optional teacher dropping."""

    Config = MultiTeacherConfig
    uses_architecture = True

    @classmethod
    def teacher_reads(cls, config: MultiTeacherConfig) -> dict[str, set[str]]:
        reads = super().teacher_reads(config)
        if config.weighting == "similarity":  # every candidate's features are scored
            for name in reads:
                reads[name] |= FEATURE_READS
        return reads

    def setup(self, model: nn.Module) -> None:
        from workbench.models.arch import architecture

        c = self.config
        self.teachers_ = self._load()
        self.feature_fn = get_loss(c.feature_loss, self.where)
        weights = [e.weight for e in c.teachers]
        if c.weighting == "similarity":
            weights = self._similarity_weights()
        self.base_weights = weights
        d_s = architecture(model, self.where).hidden_size
        owned = nn.Module()
        owned.proj = nn.ModuleDict({
            e.label: nn.Linear(d_s, architecture(t.model, f"{self.where} teacher '{e.name}'").hidden_size)
            for e, t in zip(c.teachers, self.teachers_) if e.target == "features"})
        if c.weighting == "learned":
            total = sum(weights)
            owned.log_w = nn.Parameter(torch.tensor([math.log(max(w / total, 1e-6)) for w in weights]))
        self.owned = owned.to(next(model.parameters()).device) if any(True for _ in owned.parameters()) else None

    def _similarity_weights(self) -> list[float]:
        from workbench.data import Collator
        from workbench.teacher_similarity import score_teachers, similarity_weights, write_selection

        c = self.config
        data = self.ctx.train_data
        if data is None or len(data) < 2:
            raise ConfigError(f"{self.where}: 'weighting' is similarity, which scores the teachers on the "
                              "stage's training texts, but the stage has fewer than 2")
        rows = score_teachers({e.name: t for e, t in zip(c.teachers, self.teachers_)}, data,
                              Collator(self.ctx.tokenizer), c.similarity, c.pooling, c.similarity_examples,
                              self.ctx.seed)
        weights = similarity_weights([r["score"] for r in rows], c.similarity_temperature, c.similarity_top)
        for r, w in zip(rows, weights):
            r["weight"] = w
        write_selection(rows, self.ctx.run_dir / "teacher_selection" / f"{self.ctx.stage}.csv")
        print(f"[workbench]   {self.ctx.stage}: teacher similarity ({c.similarity}) "
              + ", ".join(f"{r['teacher']} {r['score']:.4f} -> weight {w:.3f}" for r, w in zip(rows, weights)),
              flush=True)
        return weights

    def _weights(self) -> torch.Tensor:
        if self.owned is not None and hasattr(self.owned, "log_w"):
            return torch.softmax(self.owned.log_w, 0)
        w = torch.tensor(self.base_weights, dtype=torch.float32)
        return w / w.sum()

    def loss_terms(self, state: TrainState) -> LossTerms:
        c, T = self.config, self.config.temperature
        z_s = state.outputs.logits
        active = [i for i, w in enumerate(self.base_weights) if w > 0]  # a zero-weight teacher is not even run
        targets = {i: self._teacher_target(i, state) for i in active}
        log_s = F.log_softmax(z_s / T, dim=-1)
        pooled_s = None
        per: dict[int, torch.Tensor] = {}
        for i in active:
            e = c.teachers[i]
            if e.target == "logits":
                per[i] = row_kl(F.log_softmax(targets[i] / T, dim=-1), log_s).mean()
            else:
                if pooled_s is None:
                    pooled_s = pool(state.outputs.hidden_states[-1], state.outputs.attention_mask, c.pooling)
                per[i] = self.feature_fn(self.owned.proj[e.label](pooled_s), targets[i])
        keep = keep_mask([float(per[i].detach()) for i in active], c.teacher_drop, self.ctx.seed, state.step)
        kept = [i for i, k in zip(active, keep) if k]
        w_all = self._weights()
        w = w_all[kept] / w_all[kept].sum()
        wk = dict(zip(kept, w))
        terms: LossTerms = {}
        logit_kept = [i for i in kept if c.teachers[i].target == "logits"]
        if c.combine == "ensemble" and [i for i in active if c.teachers[i].target == "logits"]:
            if logit_kept:
                share = sum(wk[i] for i in logit_kept)
                target = ensemble_log_probs([targets[i] for i in logit_kept], torch.stack([wk[i] / share for i in logit_kept]),
                                            T, c.average)
                terms["kd_ensemble"] = (c.alpha * T * T, share * row_kl(target, log_s).mean())
            else:
                terms["kd_ensemble"] = (0.0, z_s.new_zeros(()))
        for i in active:
            e = c.teachers[i]
            if e.target == "logits" and c.combine == "ensemble":
                continue
            name = f"{'kd' if e.target == 'logits' else 'feat'}_{e.label}"
            scale = c.alpha * (T * T if e.target == "logits" else 1.0)
            terms[name] = (scale, wk[i] * per[i]) if i in wk else (0.0, per[i].detach())  # dropped: no gradient
        if c.alpha < 1.0:
            terms["ce"] = (1.0 - c.alpha, F.cross_entropy(z_s, state.batch["labels"]))
        if c.weighting == "learned":  # logged, not summed (weight 0)
            for e, v in zip(c.teachers, w_all.detach()):
                terms[f"w_{e.label}"] = (0.0, v)
        return terms


def ensemble_log_probs(logits: list[torch.Tensor], weights: torch.Tensor, temperature: float,
                       average: str = "probs") -> torch.Tensor:
    """log of the ensemble's soft targets: sum_i w_i softmax(z_i / T) (``probs``) or
    softmax(sum_i w_i z_i / T) (``logits``); `weights` sum to 1."""
    z = torch.stack(logits)  # [K, B, C]
    w = weights.to(z.dtype)[:, None, None]
    if average == "logits":
        return F.log_softmax((w * z).sum(0) / temperature, dim=-1)
    return torch.logsumexp(F.log_softmax(z / temperature, dim=-1) + w.clamp_min(1e-30).log(), dim=0)
