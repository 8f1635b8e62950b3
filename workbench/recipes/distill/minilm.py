"""`distill_relations`: MiniLM's self-attention distillation (Wang et al., 2020, "MiniLM: Deep
Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained Transformers") and
MiniLMv2's multi-head self-attention relation distillation (Wang et al., 2021, "MiniLMv2:
Multi-Head Self-Attention Relation Distillation for Compressing Pretrained Transformers").

One teacher layer is matched with one student layer (defaults: the last of each; MiniLMv2 found
an upper-middle teacher layer better for large teachers, so any layer may be named). The terms,
each KL(teacher || student) averaged over heads and real query tokens (padding keys masked):

* ``version: 1`` -- ``attn``: the self-attention distributions softmax(Q_h K_h^T / sqrt(d_h)) of
  every attention head, and ``rel_vv``: the value relations softmax(V_h V_h^T / sqrt(d_h)) per
  attention head. Needs the same number of attention heads on both sides (the widths may differ).
* ``version: 2`` -- ``rel_qq``, ``rel_kk``, ``rel_vv``: the queries, keys and values of both
  sides are each split into ``relation_heads`` relation heads (of size width / relation_heads,
  so it must divide both widths) and their scaled dot-product relations are matched. Head counts
  and hidden sizes may differ.

No projection is needed: relations are [L, L] on both sides. ``weight`` multiplies every term.

The attention distributions of version 1 are recomputed from the captured queries and keys
(exactly what BERT, DistilBERT and RoBERTa layers compute, before dropout) rather than read from
the model's ``output_attentions``: SDPA attention (the default in transformers 5) returns no
attention probabilities, and the eager path returns them after dropout.

MiniLM is task-agnostic distillation followed by fine-tuning: this recipe contributes only the
relation terms, so a stage with ``distill_relations`` alone trains just the relations (the
classifier gets no gradient). Combine it in one stage with ``finetune`` or ``distill_logits``,
or follow it with a fine-tuning stage::

    - name: student
      recipes:
        - student: {layers: [0, 2, 4]}
        - distill_relations: {teacher: teacher, version: 2, relation_heads: 12}
        - distill_logits: {teacher: teacher}
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from workbench.config import fail
from workbench.forward import attention_log_probs
from workbench.recipes.base import LossTerms, TrainState, register_recipe
from workbench.recipes.distill.losses import get_loss
from workbench.recipes.distill.teacher import TeacherRecipe
from workbench.recipes.shapes import Shapes

__all__ = ["RelationDistill", "RelationDistillConfig", "attention_log_probs", "resolve_layer"]


def resolve_layer(layer: int, num_layers: int, where: str, key: str, side: str) -> int:
    """A 1-based layer number (negative: from the end, -1 = last) as a 0-based index."""
    idx = layer - 1 if layer > 0 else num_layers + layer
    if layer == 0 or not 0 <= idx < num_layers:
        fail(where, key, f"is {layer}, but the {side} has {num_layers} layers "
             f"(1-based layer numbers 1..{num_layers}, or -1 for the last)")
    return idx


@dataclass
class RelationDistillConfig:
    teacher: str = "teacher"
    """An earlier stage's name, or a model name or local path (same tokenizer as the student)."""
    version: int = 2
    """1: MiniLM (attention distributions + value relations, equal head counts);
    2: MiniLMv2 (query/key/value relations over `relation_heads` relation heads)."""
    teacher_layer: int = -1
    """1-based teacher layer to imitate; negative counts from the end (-1 = last)."""
    student_layer: int = -1
    """1-based student layer that imitates it; negative counts from the end (-1 = last)."""
    relation_heads: int = 12
    """Version 2: relation heads A_r; must divide both sides' query/key/value widths."""
    weight: float = 1.0
    """Weight of each relation term in the stage's loss."""

    def validate(self, where: str) -> None:
        if self.version not in (1, 2):
            fail(where, "version", f"must be 1 (MiniLM) or 2 (MiniLMv2), got {self.version}")
        for key in ("teacher_layer", "student_layer"):
            if getattr(self, key) == 0:
                fail(where, key, "must be a 1-based layer number or negative from the end (-1 = last), got 0")
        if self.relation_heads < 1:
            fail(where, "relation_heads", f"must be >= 1, got {self.relation_heads}")
        if self.weight < 0:
            fail(where, "weight", f"must be >= 0, got {self.weight}")


def _qkv_widths(arch, i: int) -> set[int]:
    return {int(arch.module(i, role).out_features) for role in ("query", "key", "value")}


@register_recipe("distill_relations")
class RelationDistill(TeacherRecipe):
    """Match the teacher's self-attention relations of one layer (MiniLM / MiniLMv2)."""

    Config = RelationDistillConfig
    uses_architecture = True

    @classmethod
    def layer_numbers(cls, config: RelationDistillConfig) -> list[tuple[str | None, str, int]]:
        return [(None, "student_layer", config.student_layer),
                (config.teacher, "teacher_layer", config.teacher_layer)]

    @classmethod
    def teacher_reads(cls, config: RelationDistillConfig) -> dict[str, set[str]]:
        return {config.teacher: {"qkv", "layers"}}

    @classmethod
    def check_shapes(cls, config: RelationDistillConfig, shapes: Shapes, where: str) -> None:
        """The layer numbers, and (version 2) `relation_heads` against the widths known in
        advance: the stage's model's, and the teacher's when it is a stage (`setup` checks the rest)."""
        super().check_shapes(config, shapes, where)
        if config.version != 2:
            return
        for side, width in (("the student's", shapes.width), (f"teacher '{config.teacher}''s",
                                                              shapes.widths.get(config.teacher))):
            if width is not None and width % config.relation_heads:
                fail(where, "relation_heads", f"{config.relation_heads} must divide {side} query/key/value width "
                     f"{width}")

    def needs(self) -> set[str]:
        return {"qkv"}

    def setup(self, model: nn.Module) -> None:
        from workbench.models.arch import architecture

        c, where = self.config, self.where
        self.teacher = self.ctx.teachers.get(c.teacher, self.needs(), where)
        s_arch = architecture(model, f"{where}: student")
        t_arch = architecture(self.teacher.model, f"{where}: teacher '{c.teacher}'")
        self.s_layer = resolve_layer(c.student_layer, s_arch.num_layers, where, "student_layer", "student")
        self.t_layer = resolve_layer(c.teacher_layer, t_arch.num_layers, where, "teacher_layer",
                                     f"teacher '{c.teacher}'")
        s_w, t_w = _qkv_widths(s_arch, self.s_layer), _qkv_widths(t_arch, self.t_layer)
        if len(s_w) != 1 or len(t_w) != 1:
            fail(where, "version", f"needs equal query/key/value widths on each side, got student {sorted(s_w)} "
                 f"and teacher {sorted(t_w)}")
        s_width, t_width = s_w.pop(), t_w.pop()
        if c.version == 1:
            s_heads, t_heads = s_arch.num_heads(self.s_layer), t_arch.num_heads(self.t_layer)
            if s_heads != t_heads:
                fail(where, "version", f"1 (MiniLM) needs the same number of attention heads, but student layer "
                     f"{self.s_layer + 1} has {s_heads} and teacher layer {self.t_layer + 1} has {t_heads}; "
                     f"use version: 2 (relation heads work across head counts)")
            self.heads = s_heads
        else:
            if s_width % c.relation_heads or t_width % c.relation_heads:
                fail(where, "relation_heads", f"{c.relation_heads} must divide both the student's query/key/value "
                     f"width {s_width} and the teacher's {t_width}")
            self.heads = c.relation_heads
        self.relation_kl = get_loss("relation_kl", where)
        self.attention_kl = get_loss("attention_kl", where)

    def loss_terms(self, state: TrainState) -> LossTerms:
        c = self.config
        mask = state.outputs.attention_mask
        qs, ks, vs = state.outputs.qkv[self.s_layer]
        qt, kt, vt = self.teacher.outputs(state.batch).qkv[self.t_layer]
        qt, kt, vt = qt.float(), kt.float(), vt.float()
        if c.version == 1:
            a_s = attention_log_probs(qs, ks, self.heads, mask).exp()
            a_t = attention_log_probs(qt, kt, self.heads, mask).exp()
            return {"attn": (c.weight, self.attention_kl(a_s, a_t, mask=mask)),
                    "rel_vv": (c.weight, self.relation_kl(vs, vt, mask=mask, num_heads=self.heads))}
        return {f"rel_{n}{n}": (c.weight, self.relation_kl(s, t, mask=mask, num_heads=self.heads))
                for n, s, t in (("q", qs, qt), ("k", ks, kt), ("v", vs, vt))}

    def on_train_end(self, state: TrainState) -> None:
        self.__dict__.pop("teacher", None)  # the service keeps it for later stages
