"""Helpers behind the structural distillation losses in :mod:`workbench.recipes.distill.losses`.

* :func:`relation_matrix` -- MiniLM v2 self-attention relations (Wang et al., 2021, "MiniLMv2:
  Multi-Head Self-Attention Relation Distillation for Compressing Pretrained Transformers").
* :func:`linear_cka` -- linear centered kernel alignment (Kornblith, Norouzi, Lee & Hinton, 2019,
  "Similarity of Neural Network Representations Revisited").
* :func:`interpolated_mi_bound` -- the alpha-interpolated lower bound on mutual information
  (Poole, Ozair, van den Oord, Alemi & Tucker, 2019, "On Variational Bounds of Mutual
  Information", I_alpha, eq. 12), the bound behind Distiller's MI-alpha objective.
"""
from __future__ import annotations

import math

import torch

__all__ = ["relation_matrix", "linear_cka", "interpolated_mi_bound", "row_kl", "log_mix"]


def log_mix(log_a: torch.Tensor, log_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """log(alpha * a + (1 - alpha) * b) from log a and log b, stable (logsumexp); alpha in [0, 1]."""
    if alpha <= 0.0:
        return log_b
    if alpha >= 1.0:
        return log_a
    return torch.logaddexp(log_a + math.log(alpha), log_b + math.log1p(-alpha))


def row_kl(log_p: torch.Tensor, log_q: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p || q) over the last dim from log-probabilities; terms with p == 0 (or keep == 0) are 0."""
    p = log_p.exp()
    live = p > 0
    if keep is not None:
        live = live & keep
    zero = torch.zeros_like(p)
    # Dead positions are zeroed before the arithmetic so -inf - -inf never makes a NaN gradient.
    terms = p * (torch.where(live, log_p, zero) - torch.where(live, log_q, zero))
    return torch.where(live, terms, zero).sum(-1)


def relation_matrix(x: torch.Tensor, num_heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MiniLM v2 relation log-probabilities ``log softmax(x_h x_h^T / sqrt(d_h))`` per head.

    ``x`` is [B, L, D] with D divisible by ``num_heads``; ``mask`` is [B, L] (1 = real token).
    Masked keys get log-probability -inf. A sequence with no real token at all keeps every key
    (its rows are all padding, so a masked loss ignores them; this only avoids NaNs).
    Returns [B, H, L, L].
    """
    if x.dim() != 3:
        raise ValueError(f"relation_matrix: expected x of shape [B, L, D], got {tuple(x.shape)}")
    b, l, d = x.shape
    if num_heads < 1 or d % num_heads:
        raise ValueError(f"relation_matrix: width {d} (shape {tuple(x.shape)}) is not divisible "
                         f"by num_heads={num_heads}")
    dh = d // num_heads
    h = x.reshape(b, l, num_heads, dh).transpose(1, 2)          # [B, H, L, dh]
    scores = h @ h.transpose(-1, -2) / math.sqrt(dh)             # [B, H, L, L]
    if mask is not None:
        if tuple(mask.shape) != (b, l):
            raise ValueError(f"relation_matrix: mask shape {tuple(mask.shape)} does not match "
                             f"x shape {tuple(x.shape)} (expected {(b, l)})")
        keys = mask.bool()
        keys = keys | ~keys.any(-1, keepdim=True)
        scores = scores.masked_fill(~keys[:, None, None, :], float("-inf"))
    return torch.log_softmax(scores, dim=-1)


def linear_cka(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Linear CKA between row-feature matrices x [n, dx] and y [n, dy] (widths may differ).

    CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), with Xc, Yc column-centred.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka: need [n, dx] and [n, dy] with the same n, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    xc = x - x.mean(0, keepdim=True)
    yc = y - y.mean(0, keepdim=True)
    hsic = (yc.transpose(0, 1) @ xc).pow(2).sum()
    nx = (xc.transpose(0, 1) @ xc).pow(2).sum().sqrt()
    ny = (yc.transpose(0, 1) @ yc).pow(2).sum().sqrt()
    return hsic / (nx * ny + eps)


def _log_loo_mean_exp(scores: torch.Tensor) -> torch.Tensor:
    """out[i, j] = log( mean_{k != j} exp(scores[i, k]) ), stable, O(n^2) memory.

    Uses lse_i + log(1 - exp(scores[i, j] - lse_i)); the difference d = lse_i - scores[i, j] is
    clamped at the dtype's resolution so a row dominated by one entry stays finite.
    """
    n = scores.shape[-1]
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    d = (lse - scores).clamp_min(torch.finfo(scores.dtype).eps)
    return lse + torch.log(-torch.expm1(-d)) - math.log(n - 1)


def interpolated_mi_bound(scores: torch.Tensor, alpha: float, log_baseline: float = 1.0) -> torch.Tensor:
    """Poole et al.'s I_alpha lower bound on I(X; Y) from critic scores [n, n].

    ``scores[i, j] = f(x_j, y_i)``; the diagonal holds the positive (joint) pairs. The baseline
    for y_i, evaluated for the pair (i, j), is
    ``b_ij = alpha * mean_{k != j} exp(f(x_k, y_i)) + (1 - alpha) * exp(log_baseline)`` and

        I_alpha = 1 + mean_{i != j} [f(x_i, y_i) - log b_ij] - mean_{i != j} exp(f(x_j, y_i)) / b_ii

    (the same estimator as the authors' reference notebook, with a constant baseline). With
    ``log_baseline = 1`` (a(y) = e), alpha = 0 gives exactly the NWJ bound
    ``mean diag f - e^-1 mean_offdiag exp f``; alpha = 1 gives the multi-sample InfoNCE-style
    bound with a leave-one-out normaliser.
    """
    n = scores.shape[0]
    if scores.dim() != 2 or scores.shape[1] != n or n < 2:
        raise ValueError(f"interpolated_mi_bound: need square scores [n, n] with n >= 2, "
                         f"got {tuple(scores.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"interpolated_mi_bound: alpha must be in [0, 1], got {alpha}")
    const = torch.full_like(scores, log_baseline)
    if alpha > 0.0:
        log_b = log_mix(_log_loo_mean_exp(scores), const, alpha)
    else:
        log_b = const
    off = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    diag = scores.diagonal()
    joint = (diag[:, None] - log_b)[off].mean()
    marg_logits = (scores - log_b.diagonal()[:, None])[off]
    marg = torch.exp(torch.logsumexp(marg_logits, dim=0) - math.log(n * (n - 1)))
    return 1.0 + joint - marg
