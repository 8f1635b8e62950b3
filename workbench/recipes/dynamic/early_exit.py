"""`early_exit`: intermediate classifiers (exits) trained jointly with self-distillation, so that
an example can leave the encoder early (multi-exit BERT: DeeBERT, Xin et al., 2020; PABEE, Zhou
et al., 2020; hierarchical / self-distillation of exits: FastBERT, Liu et al., 2020, and
Phuong & Lampert, 2019, "Distillation-Based Training for Multi-Exit Architectures").

`apply` adds an `ExitHead` (Linear -> tanh -> Linear, the shape of BERT's pooler + classifier, on
the masked mean of the layer's tokens, or on [CLS] with `pooling: cls`) after each layer of
`exit_layers` (default: every layer but the last, whose exit is the model's own classifier),
recorded as the `exit_heads` edit so it is saved with the model.
Loss terms, each a weighted mean over the exits (weights by `weighting`: "depth", w_i ~ i + 1,
deeper exits count more as in the multi-exit literature; or "uniform"):

* `exit_ce`: cross-entropy of each exit on the labels;
* `exit_self_kd`: T^2 KL from the last exit (the model's classifier, detached) to each exit;
* `exit_teacher_kd`: the same from `teacher`'s logits, when a teacher is named.

The last exit itself learns from the stage's other recipes (`finetune`, `distill_logits`).
At the end of training the model carries `model.dynamic` with `exit_layers`, `criterion` and
`threshold` (default None: no early exit until one is chosen; `length_search` sweeps it).
Inference exits after a fixed layer (`exit_at`) or per example when the exit's normalized
entropy <= threshold ("entropy") or its max probability >= threshold ("confidence").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import fail, fail_if_set
from workbench.models.dynamic import CRITERIA, EXIT_POOLING, DynamicSpec, model_spec
from workbench.models.edits import record_edit
from workbench.recipes.base import LossTerms, Recipe, StageCheck, TrainState, register_recipe
from workbench.recipes.distill.teacher import check_teacher
from workbench.recipes.dynamic.common import require_full_model_loss, soft_kl
from workbench.recipes.shapes import Shapes


@dataclass
class EarlyExitConfig:
    exit_layers: list[int] | None = None
    """0-based layers with an exit head; None: every layer but the last."""
    weighting: str = "depth"
    """"depth" (exit i weighs i + 1) or "uniform"."""
    ce_weight: float = 1.0
    self_distill: float = 1.0
    """Weight of `exit_self_kd` (0: none)."""
    temperature: float = 2.0
    teacher: str | None = None
    """An earlier stage or model the exits also distil from (term `exit_teacher_kd`)."""
    teacher_weight: float = 1.0
    pooling: str = "mean"
    """What an exit head reads: "mean" (masked mean of the tokens the layer kept) or "cls" (the
    [CLS] state). Mean by default: in the early layers of MiniLM, a mean-pooling sentence model,
    [CLS] carries little (a probe on frozen features after layers 0 / 1: [CLS] 53 / 68 %,
    mean 82 / 88 % held-out on rt-sentiment), and [CLS] exits never fired in the #10 study."""
    head_lr_scale: float = 1.0
    """The exit heads (new, randomly initialised) learn at this multiple of the stage's lr (their
    own optimizer groups)."""
    criterion: str = "entropy"
    threshold: float | None = None
    """Saved with the model: exit when the criterion passes it (None: no early exit)."""

    def validate(self, where: str) -> None:
        if self.weighting not in ("depth", "uniform"):
            fail(where, "weighting", f"must be 'depth' or 'uniform', got {self.weighting!r}")
        if self.criterion not in CRITERIA:
            fail(where, "criterion", f"must be one of {CRITERIA}, got {self.criterion!r}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            fail(where, "threshold", f"must be in [0, 1] (normalized entropy or probability), got {self.threshold}")
        if self.temperature <= 0:
            fail(where, "temperature", f"must be > 0, got {self.temperature}")
        for key in ("ce_weight", "self_distill", "teacher_weight"):  # negative: trains the exits to be wrong
            if getattr(self, key) < 0:
                fail(where, key, f"must be >= 0, got {getattr(self, key)}")
        if self.teacher is None:
            fail_if_set(self, where, ("teacher_weight",), "no 'teacher' is given for the exits to distil from")
        if self.pooling not in EXIT_POOLING:
            fail(where, "pooling", f"must be one of {EXIT_POOLING}, got {self.pooling!r}")
        if self.head_lr_scale <= 0:
            fail(where, "head_lr_scale", f"must be > 0, got {self.head_lr_scale}")
        if self.exit_layers is not None and (not self.exit_layers or len(set(self.exit_layers)) != len(self.exit_layers)):
            fail(where, "exit_layers", f"must list distinct layers, got {self.exit_layers}")


@register_recipe("early_exit")
class EarlyExit(Recipe):
    """Exit heads + their loss terms (`exit_ce`, `exit_self_kd`, `exit_teacher_kd`)."""

    Config = EarlyExitConfig
    uses_architecture = True

    @classmethod
    def contributes_loss(cls, config: EarlyExitConfig) -> bool:
        return True

    @classmethod
    def loss_term_names(cls, config: EarlyExitConfig) -> set[str]:
        return {"exit_ce"}

    @classmethod
    def teacher_names(cls, config: EarlyExitConfig) -> list[str]:
        return [config.teacher] if config.teacher else []

    @classmethod
    def check_stage(cls, config: EarlyExitConfig, check: StageCheck) -> None:
        require_full_model_loss(check, "early_exit")
        if config.teacher:
            check_teacher(config.teacher, check)

    @classmethod
    def check_shapes(cls, config: EarlyExitConfig, shapes: Shapes, where: str) -> None:
        """`exit_layers` against the stage's model (a student in it or before it included)."""
        if config.exit_layers is not None:
            _check_exit_layers(sorted(config.exit_layers), shapes.stage, where)

    def apply(self, model: nn.Module) -> nn.Module:
        from workbench.models.arch import architecture

        n = architecture(model, self.where).num_layers
        layers = list(range(n - 1)) if self.config.exit_layers is None else sorted(self.config.exit_layers)
        _check_exit_layers(layers, n, self.where)
        self.layers = layers
        record_edit(model, "exit_heads", layers=layers, pooling=self.config.pooling)
        w = [float(i + 1) if self.config.weighting == "depth" else 1.0 for i in layers]
        self.weights = [x / sum(w) for x in w]
        return model

    def needs(self) -> set[str]:
        return {"hidden_states"}

    def lr_scales(self) -> dict[str, float]:
        return {"exit_heads.": self.config.head_lr_scale}

    def on_train_begin(self, state: TrainState) -> None:
        self.teacher = self.ctx.teachers.get(self.config.teacher, set(), self.where) if self.config.teacher else None

    def exit_logits(self, model: nn.Module, hidden_states: tuple[torch.Tensor, ...],
                    mask: torch.Tensor | None) -> list[torch.Tensor]:
        """Logits of every exit from the forward's hidden states (index 0 is the embeddings)."""
        return [model.exit_heads[str(i)](hidden_states[i + 1], mask) for i in self.layers]

    def loss_terms(self, state: TrainState) -> LossTerms:
        c, out = self.config, state.outputs
        exits = self.exit_logits(state.model, out.hidden_states, state.batch.get("attention_mask"))
        labels = state.batch["labels"]
        terms: LossTerms = {"exit_ce": (c.ce_weight, sum(w * F.cross_entropy(z, labels)
                                                         for w, z in zip(self.weights, exits)))}
        if c.self_distill:
            terms["exit_self_kd"] = (c.self_distill, sum(w * soft_kl(z, out.logits, c.temperature)
                                                         for w, z in zip(self.weights, exits)))
        if self.teacher is not None:
            z_t = self.teacher.outputs(state.batch).logits
            terms["exit_teacher_kd"] = (c.teacher_weight, sum(w * soft_kl(z, z_t, c.temperature)
                                                              for w, z in zip(self.weights, exits)))
        return terms

    def on_train_end(self, state: TrainState) -> None:
        self.teacher = None
        old = model_spec(state.model) or DynamicSpec()
        spec = old.replace(exit_layers=self.layers, exit_criterion=self.config.criterion,
                           exit_threshold=self.config.threshold)
        record_edit(state.model, "dynamic_spec", spec=spec.to_dict())


def _check_exit_layers(layers: list[int], n: int, where: str) -> None:
    bad = [x for x in layers if not 0 <= x < n - 1]
    if bad or not layers:
        fail(where, "exit_layers", f"{bad or layers} out of range: the model has {n} layers, so exits go "
             f"after layers 0..{n - 2} (the last layer's exit is the model's classifier)")
