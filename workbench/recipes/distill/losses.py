"""The distillation loss registry: named student-vs-teacher losses a recipe picks by config.

Every loss has the signature ``fn(student, teacher, *, mask=None, **params) -> scalar Tensor``:
a mean over examples (rows). ``mask`` has the inputs' leading shape (1 = real token, 0 = padding)
and restricts the mean to real rows; for the attention/relation losses it is the [B, L] token
mask. Losses never detach the teacher -- run the teacher under ``torch.no_grad()``.

Distributions over the last dim of LOGITS (all take ``temperature`` T, logits / T; the caller
applies any T^2 factor):

* ``kl`` -- forward KL(p_t || p_s) (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in
  a Neural Network").
* ``reverse_kl`` -- KL(p_s || p_t) (mode-seeking; Gu et al., 2024, "MiniLLM").
* ``skew_kl`` / ``skew_reverse_kl`` -- KL(p_t || a p_t + (1-a) p_s) and
  KL(p_s || a p_s + (1-a) p_t), a = 0.1 (Ko, Kim, Chen & Yun, 2024, "DistiLLM: Towards
  Streamlined Distillation for Large Language Models").
* ``js`` -- Jensen-Shannon divergence (Lin, 1991, "Divergence measures based on the Shannon
  entropy"), in nats.
* ``tvd`` -- total variation 0.5 * sum |p_t - p_s| (as in Wen et al., 2023, "f-Divergence
  Minimization for Sequence-Level Knowledge Distillation").

Representations over the last dim:

* ``mse`` -- mean squared error (FitNets: Romero et al., 2015; TinyBERT: Jiao et al., 2020).
* ``cosine`` -- 1 - cosine similarity per row (DistilBERT: Sanh et al., 2019).
* ``cka`` -- 1 - linear CKA of the row-feature matrices; widths may differ (Kornblith et al.,
  2019, "Similarity of Neural Network Representations Revisited").
* ``attention_kl`` -- KL between attention distributions [B, H, L, L] (MiniLM: Wang et al.,
  2020, "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression...").
* ``relation_kl`` -- KL between self-attention relations of raw vectors, any widths (MiniLMv2:
  Wang et al., 2021, "MiniLMv2: Multi-Head Self-Attention Relation Distillation...").
* ``mi_alpha`` -- negative alpha-interpolated mutual-information lower bound (Distiller: He, Shi,
  Mueller, Zha, Li & Karypis, 2021, "Distiller: A Systematic Study of Model Distillation Methods
  in Natural Language Processing"; the bound is Poole et al., 2019, I_alpha).
"""
from __future__ import annotations

import difflib
from typing import Callable

import torch
import torch.nn.functional as F

from workbench.config import ConfigError
from workbench.recipes.distill.relations import (interpolated_mi_bound, linear_cka, log_mix,
                                                  relation_matrix, row_kl)

Tensor = torch.Tensor
LossFn = Callable[..., Tensor]

__all__ = ["LOSSES", "register_loss", "get_loss", "relation_matrix"]

LOSSES: dict[str, LossFn] = {}


def register_loss(name: str) -> Callable[[LossFn], LossFn]:
    """Decorator: register ``fn`` under ``name``. A second, different fn for a name raises
    ValueError (the same function again, or a reloaded module's same-named one, is allowed)."""
    def deco(fn: LossFn) -> LossFn:
        old = LOSSES.get(name)
        if old is not None and old is not fn and (
                (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__)):
            raise ValueError(f"distillation loss '{name}' is already registered "
                             f"({old.__module__}.{old.__qualname__})")
        LOSSES[name] = fn
        return fn
    return deco


def get_loss(name: str, where: str) -> LossFn:
    """The loss registered as ``name``; ConfigError naming ``where`` and a close match if unknown."""
    if name not in LOSSES:
        close = difflib.get_close_matches(name, list(LOSSES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where}: unknown distillation loss '{name}'{hint} "
                          f"(known: {', '.join(sorted(LOSSES))})")
    return LOSSES[name]


# ---------------------------------------------------------------------------------- helpers
def _same_shape(what: str, s: Tensor, t: Tensor) -> None:
    if s.shape != t.shape:
        raise ValueError(f"{what}: student shape {tuple(s.shape)} and teacher shape "
                         f"{tuple(t.shape)} differ")
    if s.dim() < 1:
        raise ValueError(f"{what}: inputs need at least one dim, got shape {tuple(s.shape)}")


def _masked_mean(what: str, values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (all positions if mask is None)."""
    if mask is None:
        return values.mean()
    if mask.shape != values.shape:
        raise ValueError(f"{what}: mask shape {tuple(mask.shape)} does not match the inputs' "
                         f"leading shape {tuple(values.shape)}")
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def _log_probs(what: str, s: Tensor, t: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    _same_shape(what, s, t)
    if temperature <= 0:
        raise ValueError(f"{what}: temperature must be > 0, got {temperature}")
    return F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1)


def _check_alpha(what: str, alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{what}: alpha must be in [0, 1], got {alpha}")


# --------------------------------------------------------------------- distribution losses
@register_loss("kl")
def kl(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None,
       temperature: float = 1.0) -> Tensor:
    """Forward KL(p_t || p_s) per row, averaged over (real) rows."""
    ls, lt = _log_probs("kl", student, teacher, temperature)
    return _masked_mean("kl", row_kl(lt, ls), mask)


@register_loss("reverse_kl")
def reverse_kl(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None,
               temperature: float = 1.0) -> Tensor:
    """Reverse KL(p_s || p_t) per row, averaged over (real) rows."""
    ls, lt = _log_probs("reverse_kl", student, teacher, temperature)
    return _masked_mean("reverse_kl", row_kl(ls, lt), mask)


@register_loss("skew_kl")
def skew_kl(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None,
            temperature: float = 1.0, alpha: float = 0.1) -> Tensor:
    """Skew KL(p_t || alpha p_t + (1 - alpha) p_s); alpha = 0 is ``kl``."""
    _check_alpha("skew_kl", alpha)
    ls, lt = _log_probs("skew_kl", student, teacher, temperature)
    return _masked_mean("skew_kl", row_kl(lt, log_mix(lt, ls, alpha)), mask)


@register_loss("skew_reverse_kl")
def skew_reverse_kl(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None,
                    temperature: float = 1.0, alpha: float = 0.1) -> Tensor:
    """Skew reverse KL(p_s || alpha p_s + (1 - alpha) p_t); alpha = 0 is ``reverse_kl``."""
    _check_alpha("skew_reverse_kl", alpha)
    ls, lt = _log_probs("skew_reverse_kl", student, teacher, temperature)
    return _masked_mean("skew_reverse_kl", row_kl(ls, log_mix(ls, lt, alpha)), mask)


@register_loss("js")
def js(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None,
       temperature: float = 1.0) -> Tensor:
    """Jensen-Shannon 0.5 KL(p_t || m) + 0.5 KL(p_s || m), m = (p_t + p_s) / 2 (nats)."""
    ls, lt = _log_probs("js", student, teacher, temperature)
    lm = log_mix(lt, ls, 0.5)
    return _masked_mean("js", 0.5 * row_kl(lt, lm) + 0.5 * row_kl(ls, lm), mask)


@register_loss("tvd")
def tvd(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None,
        temperature: float = 1.0) -> Tensor:
    """Total variation distance 0.5 * sum |p_t - p_s| per row."""
    ls, lt = _log_probs("tvd", student, teacher, temperature)
    return _masked_mean("tvd", 0.5 * (lt.exp() - ls.exp()).abs().sum(-1), mask)


# ------------------------------------------------------------------- representation losses
@register_loss("mse")
def mse(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over all elements of the (real) rows."""
    _same_shape("mse", student, teacher)
    return _masked_mean("mse", (student - teacher).pow(2).mean(-1), mask)


@register_loss("cosine")
def cosine(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """1 - cosine similarity of each row, averaged over (real) rows."""
    _same_shape("cosine", student, teacher)
    return _masked_mean("cosine", 1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-8), mask)


def _rows(what: str, student: Tensor, teacher: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Flatten leading dims to rows (widths may differ) and keep the real rows."""
    if student.dim() < 2 or student.shape[:-1] != teacher.shape[:-1]:
        raise ValueError(f"{what}: student shape {tuple(student.shape)} and teacher shape "
                         f"{tuple(teacher.shape)} need the same leading dims [..., N, D]")
    s, t = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
    if mask is not None:
        if mask.shape != student.shape[:-1]:
            raise ValueError(f"{what}: mask shape {tuple(mask.shape)} does not match the inputs' "
                             f"leading shape {tuple(student.shape[:-1])}")
        keep = mask.reshape(-1).bool()
        s, t = s[keep], t[keep]
    return s, t


@register_loss("cka")
def cka(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """1 - linear CKA between the student's and teacher's [rows, width] feature matrices
    (leading dims flattened to rows; a statistic of the whole batch, not a per-row mean)."""
    s, t = _rows("cka", student, teacher, mask)
    return 1.0 - linear_cka(s, t)


def _token_kl(what: str, log_s: Tensor, log_t: Tensor, mask: Tensor | None) -> Tensor:
    """KL(teacher || student) per (b, h, query row) over real keys, mean over real query rows."""
    b, h, l, _ = log_s.shape
    keys = None
    if mask is not None:
        if tuple(mask.shape) != (b, l):
            raise ValueError(f"{what}: mask shape {tuple(mask.shape)} does not match inputs "
                             f"{tuple(log_s.shape)} (expected {(b, l)})")
        keys = mask.bool()[:, None, None, :]
    per_row = row_kl(log_t, log_s, keys)                        # [B, H, L]
    rows = None if mask is None else mask[:, None, :].expand(b, h, l)
    return _masked_mean(what, per_row, rows)


@register_loss("attention_kl")
def attention_kl(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None,
                 eps: float = 1e-12) -> Tensor:
    """MiniLM attention transfer: inputs are attention probabilities [B, H, L, L] (rows sum
    to 1); KL(teacher || student) per (b, h, query), keys/queries with mask == 0 ignored."""
    _same_shape("attention_kl", student, teacher)
    if student.dim() != 4 or student.shape[-1] != student.shape[-2]:
        raise ValueError(f"attention_kl: expected [B, H, L, L] attention, got student "
                         f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}")
    return _token_kl("attention_kl", (student + eps).log(), (teacher + eps).log(), mask)


@register_loss("relation_kl")
def relation_kl(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None,
                num_heads: int = 12) -> Tensor:
    """MiniLMv2 relation transfer: student [B, L, Ds], teacher [B, L, Dt] raw vectors (e.g.
    queries, keys or values), each split into ``num_heads`` relation heads; KL(R_t || R_s) of
    the scaled dot-product relations, averaged over heads and real query rows."""
    if student.dim() != 3 or teacher.dim() != 3 or student.shape[:2] != teacher.shape[:2]:
        raise ValueError(f"relation_kl: need student [B, L, Ds] and teacher [B, L, Dt], got "
                         f"{tuple(student.shape)} and {tuple(teacher.shape)}")
    log_s = relation_matrix(student, num_heads, mask)
    log_t = relation_matrix(teacher, num_heads, mask)
    return _token_kl("relation_kl", log_s, log_t, mask)


@register_loss("mi_alpha")
def mi_alpha(student: Tensor, teacher: Tensor, *, mask: Tensor | None = None,
             alpha: float = 0.5, temperature: float = 0.1) -> Tensor:
    """Distiller's MI-alpha: minus an alpha-interpolated lower bound on I(teacher; student).

    Our reading of Distiller (He et al., 2021), which builds MI-alpha on Poole et al.'s I_alpha:
    rows (leading dims flattened, masked rows dropped; n >= 2 real rows) of S [n, D] and T [n, D]
    (the same width: the caller projects) give critic scores
    ``scores[i, j] = <T_i / |T_i|, S_j / |S_j|> / temperature`` (teacher i, student j; the
    diagonal is the positive pairs), and the loss is ``-I_alpha(scores)`` from
    :func:`~workbench.recipes.distill.relations.interpolated_mi_bound` with the constant
    baseline e: alpha = 0 is exactly the NWJ bound, alpha = 1 the InfoNCE-style multi-sample
    bound (leave-one-out normaliser), in between Poole's interpolation of the two baselines.
    It falls as the student's rows align with the teacher's (and away from the other rows).
    """
    s, t = _rows("mi_alpha", student, teacher, mask)
    if s.shape[-1] != t.shape[-1]:
        raise ValueError(f"mi_alpha: student width {s.shape[-1]} and teacher width "
                         f"{t.shape[-1]} differ (shapes {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}); project the student first")
    _check_alpha("mi_alpha", alpha)
    if temperature <= 0:
        raise ValueError(f"mi_alpha: temperature must be > 0, got {temperature}")
    if s.shape[0] < 2:
        raise ValueError(f"mi_alpha: needs at least 2 real rows, got {s.shape[0]} "
                         f"(shapes {tuple(student.shape)} and {tuple(teacher.shape)})")
    scores = F.normalize(t, dim=-1) @ F.normalize(s, dim=-1).transpose(0, 1) / temperature
    return -interpolated_mi_bound(scores, alpha)
