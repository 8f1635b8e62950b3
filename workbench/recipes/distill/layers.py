"""Layer-wise distillation (TinyBERT: Jiao et al., 2020, "TinyBERT: Distilling BERT for Natural
Language Understanding").

The student learns, per mapped layer pair (m <- g(m), see `layer_map.py`):

* ``emb``       -- embeddings: L(E_s W_e, E_t)                    (``embeddings``, ``embedding_weight``)
* ``hidden_l{m}`` -- hidden states: L(H_s^m W_h, H_t^g(m))         (``hidden``, ``hidden_weight``)
* ``attn_l{m}`` -- self-attention: L(A_s^m, A_t^g(m))               (``attention``, ``attention_weight``)
* ``pred``      -- prediction layer: soft cross-entropy
  -softmax(z_t / T) . log_softmax(z_s / T), averaged over the batch (``prediction``,
  ``prediction_weight``; no T^2 factor, as in TinyBERT).

L is ``hidden_loss`` / ``attention_loss`` from the loss registry (``mse`` by default, as in the
paper). m is the student's layer, 1-based. TinyBERT's two-stage schedule is two stages: stage 1
intermediate layers (``prediction: false``), stage 2 ``prediction: true`` with ``embeddings``,
``hidden`` and ``attention`` false (usually on augmented data: the ``augment`` recipe).

Choices, where Hugging Face differs from the paper:

* **Attention probabilities, not scores.** TinyBERT matches the pre-softmax attention scores;
  Hugging Face models expose only the attention distributions (after softmax), so those are
  matched. With ``mse`` their values are small (rows sum to 1), so the ``attn_l*`` terms are small;
  raise ``attention_weight`` or use ``attention_loss: attention_kl``. Padding is masked with the
  student's attention mask: padded query rows do not count, padded key columns are zeroed on both
  sides. The distributions come from `workbench.forward`, which rebuilds them from the
  captured queries and keys (the fast SDPA attention stays on).
* **Different head counts** (a narrower student): the head-averaged distributions are matched
  (each side's mean over heads, [B, 1, L, L]); equal head counts are matched head by head.
* **Different widths**: one learned linear projection W_h (student hidden -> teacher hidden, with
  bias, shared by all layers as in TinyBERT) and W_e for the embeddings, created in `setup()` as
  the recipe's owned parameters: trained, checkpointed and resumed with the stage, but not part of
  the saved model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import fail
from workbench.recipes.base import LossTerms, TrainState, register_recipe
from workbench.recipes.distill.layer_map import layer_pairs, normalize_map
from workbench.recipes.distill.losses import get_loss
from workbench.recipes.distill.teacher import TeacherRecipe

# Losses that take [B, H, L, L] attention probabilities with the [B, L] token mask; every other
# loss is applied row-wise to each query's distribution (mask [B, H, L]).
_ATTENTION_LOSSES = {"attention_kl"}


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """TinyBERT's prediction-layer loss: -sum softmax(z_t / T) * log_softmax(z_s / T), batch mean."""
    p_t = F.softmax(teacher_logits / temperature, dim=-1)
    return -(p_t * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


@dataclass
class LayerDistillConfig:
    teacher: str = "teacher"
    """An earlier stage's name, or a model name or local path (with the student's tokenizer,
    unless only `prediction` is on)."""
    layer_map: str | dict[int, int] = "uniform"
    """"uniform" (m <- m * N / M), "last" (the teacher's last M layers), or {student: teacher},
    1-based layers, 0 = embeddings."""
    embeddings: bool = True
    hidden: bool = True
    attention: bool = True
    prediction: bool = False
    temperature: float = 1.0
    """Of the prediction-layer soft cross-entropy."""
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    embedding_weight: float = 1.0
    prediction_weight: float = 1.0
    hidden_loss: str = "mse"
    """Loss-registry name for the embeddings and hidden states (mse, cosine, cka, ...)."""
    attention_loss: str = "mse"
    """Loss-registry name for the attention distributions (mse, attention_kl, ...)."""

    def validate(self, where: str) -> None:
        self.layer_map = normalize_map(self.layer_map, where)
        if not (self.embeddings or self.hidden or self.attention or self.prediction):
            fail(where, "prediction", "is false and so are embeddings, hidden and attention: enable at least one part")
        if self.temperature <= 0:
            fail(where, "temperature", f"must be > 0, got {self.temperature}")
        for key in ("hidden_weight", "attention_weight", "embedding_weight", "prediction_weight"):
            if getattr(self, key) < 0:
                fail(where, key, f"must be >= 0, got {getattr(self, key)}")
        get_loss(self.hidden_loss, f"{where}: 'hidden_loss'")
        get_loss(self.attention_loss, f"{where}: 'attention_loss'")


def matched_outputs(c: LayerDistillConfig) -> set[str]:
    """The forward outputs the student and the teacher both give for the parts matched."""
    out = set()
    if c.embeddings or c.hidden:
        out.add("hidden_states")
    if c.attention:
        out.add("attentions")
    return out


@register_recipe("distill_layers")
class LayerDistill(TeacherRecipe):
    """TinyBERT's embedding, hidden-state, attention and prediction-layer distillation."""

    Config = LayerDistillConfig
    uses_architecture = True

    @classmethod
    def teacher_reads(cls, config: LayerDistillConfig) -> dict[str, set[str]]:
        return {config.teacher: matched_outputs(config) | {"layers"}}

    @classmethod
    def layer_numbers(cls, config: LayerDistillConfig) -> list[tuple[str | None, str, int]]:
        if isinstance(config.layer_map, str):
            return []
        return [n for m, t in config.layer_map.items()
                for n in ((None, f"layer_map[{m}]", m), (config.teacher, f"layer_map[{m}]", t))]

    def needs(self) -> set[str]:
        return matched_outputs(self.config)

    # ------------------------------------------------------------------------------ setup
    def setup(self, model: nn.Module) -> None:
        from workbench.models.arch import architecture

        c = self.config
        # the teacher service raises a ConfigError naming the teacher when its tokenizer differs
        self.teacher = self.ctx.teachers.get(c.teacher, self.needs(), self.where)
        s_arch = architecture(model, self.where)
        t_arch = architecture(self.teacher.model, f"{self.where} teacher '{c.teacher}'")
        pairs = layer_pairs(c.layer_map, s_arch.num_layers, t_arch.num_layers, self.where)
        self.emb_teacher_layer = pairs.pop(0)
        self.pairs: dict[int, int] = pairs
        if c.attention:
            for m, t in pairs.items():
                if t == 0:
                    fail(self.where, f"layer_map[{m}]", "maps a student layer to the teacher's embeddings (0), "
                                                        "which have no attention; set attention: false or map it to a layer")
        owned = nn.Module()
        ds, dt = s_arch.hidden_size, t_arch.hidden_size
        if ds != dt:
            if c.hidden and pairs:
                owned.W_h = nn.Linear(ds, dt)
            if c.embeddings:
                owned.W_e = nn.Linear(ds, dt)
        self.owned = owned if any(True for _ in owned.parameters()) else None
        self.hidden_fn = get_loss(c.hidden_loss, self.where)
        self.attention_fn = get_loss(c.attention_loss, self.where)

    # ------------------------------------------------------------------------------ losses
    def _project(self, name: str, h: torch.Tensor) -> torch.Tensor:
        if self.owned is not None and hasattr(self.owned, name):
            return getattr(self.owned, name)(h)
        return h

    def _attention_term(self, a_s: torch.Tensor, a_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if a_s.shape[1] != a_t.shape[1]:  # different head counts: head-averaged distributions
            a_s, a_t = a_s.mean(1, keepdim=True), a_t.mean(1, keepdim=True)
        keys = mask[:, None, None, :].to(a_s.dtype)
        a_s, a_t = a_s * keys, a_t * keys
        if self.config.attention_loss in _ATTENTION_LOSSES:
            return self.attention_fn(a_s, a_t, mask=mask)
        rows = mask[:, None, :].expand(a_s.shape[0], a_s.shape[1], mask.shape[1])
        return self.attention_fn(a_s, a_t, mask=rows)

    def loss_terms(self, state: TrainState) -> LossTerms:
        c = self.config
        s = state.outputs
        t = self.teacher.outputs(state.batch)
        terms: LossTerms = {}
        mask = s.attention_mask
        if mask is None:
            mask = torch.ones(s.logits.shape[0], state.batch["input_ids"].shape[1], dtype=torch.long)
        if c.embeddings:
            e_s = self._project("W_e", s.hidden_states[0])
            terms["emb"] = (c.embedding_weight, self.hidden_fn(e_s, t.hidden_states[self.emb_teacher_layer], mask=mask))
        for m, g in self.pairs.items():
            if c.hidden:
                h_s = self._project("W_h", s.hidden_states[m])
                terms[f"hidden_l{m}"] = (c.hidden_weight, self.hidden_fn(h_s, t.hidden_states[g], mask=mask))
            if c.attention:
                terms[f"attn_l{m}"] = (c.attention_weight,
                                       self._attention_term(s.attentions[m - 1], t.attentions[g - 1], mask))
        if c.prediction:
            terms["pred"] = (c.prediction_weight, soft_cross_entropy(s.logits, t.logits, c.temperature))
        return terms
