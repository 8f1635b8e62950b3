"""Label-free, gradient-free importance of heads and FFN neurons (Nova et al. 2023, "Gradient-Free
Structured Pruning with Unlabeled Data"). The authors' code is not public; this is rebuilt from
the paper's abstract and talk (`/work/shared/papers/methods.md`). Every detail marked *choice*
is ours.

* **R2, representative ranking from weights** (`hull_scores`, `representative_scores`): each FFN
  neuron is the point x_j = [its `ffn_in` row, its `ffn_in` bias, its `ffn_out` column] (*choice*:
  the bias is part of the filter's affine map). Gaussian kernel K_ij = exp(-gamma |x_i - x_j|^2)
  (*choice*: gamma = 1 / median squared distance unless given). The kernelised convex hull is
  approximated by a non-negative self-representation phi(X) ~ phi(X) C whose columns are convex
  combinations: C starts uniform and takes `iters` multiplicative steps C <- C * K / (K C), each
  followed by renormalising the columns to sum 1 (*choice*: the plain ratio with the simplex
  projection; the notes mention a sqrt variant, which ranked the same on our checks). A point on
  the hull can only be represented by itself, so its C_jj grows fastest; interior, redundant
  neurons are spread over their neighbours. Score: C_jj after `iters` steps (C = I is the
  optimum, so the ranking is by how quickly a neuron proves irreplaceable; *choice*: 20 steps).
* **D2, data-driven ranking** (`activation_stats`): on unlabeled text, what removing a unit does
  to the LayerNorm that follows it, to first order: for a neuron, a_jt^2 |g * centre(w2_j)|^2 /
  var(z_t) on token t (a: its activation, w2_j: its `ffn_out` column, g: the LayerNorm weight,
  z_t: the LayerNorm's input); for a head, |g * centre(W_o[:, h] ctx_ht)|^2 / var(z_t)
  (*choice*: scaling by the LayerNorm makes layers comparable). Tokens: the real ones, in the
  last layer only [CLS] (all a sequence classifier reads), as `workbench.prune.tune`. `energy`
  is the mean over tokens (comparable across layers, heads and neurons: it feeds the budgeted
  search); `votes` is the talk's "each sample votes": per example, the neurons of a layer are
  ranked by their mean energy on that example's tokens and the normalised ranks are averaged
  over examples (a Borda count).
* **Merge** (`merged_neuron_scores`): within a layer, the R2 and D2 rank percentiles are averaged
  with weights; the search then sees the layer's sorted energies re-assigned in merged order, so
  the energies decide *how many* neurons a layer keeps under the budget and the merged ranking
  decides *which* (*choice*).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.forward import model_inputs
from workbench.models.arch import architecture
from workbench.prune.structure import structure


@torch.no_grad()
def hull_scores(points: torch.Tensor, gamma: float | None = None, iters: int = 20) -> torch.Tensor:
    """C_jj of the non-negative convex self-representation of `points` [n, dim] in the RBF
    kernel's feature space (higher: closer to a vertex of the kernelised convex hull)."""
    x = points.detach().float()
    n = x.shape[0]
    if n <= 1:
        return torch.ones(n)
    d2 = torch.cdist(x, x).pow(2)
    if gamma is None:
        off = d2[~torch.eye(n, dtype=torch.bool)]
        med = float(off.median())
        gamma = 1.0 / med if med > 0 else 1.0
    k = torch.exp(-gamma * d2)
    c = torch.full((n, n), 1.0 / n)
    for _ in range(iters):
        c = c * (k / (k @ c).clamp_min(1e-30))
        c = c / c.sum(0, keepdim=True).clamp_min(1e-30)
    return c.diagonal().clone()


@torch.no_grad()
def representative_scores(model: nn.Module, layers: torch.Tensor, gamma: float | None = None,
                          iters: int = 20) -> torch.Tensor:
    """R2 score of every neuron [L, Fmax] (0 for padding and for layers not in `layers`, a bool
    [L] of the layers to score)."""
    arch, st = architecture(model), structure(model)
    out = torch.zeros(st.num_layers, st.max_neurons)
    for i in range(st.num_layers):
        nf = st.neurons[i]
        if not nf or not bool(layers[i]):
            continue
        w1, w2 = arch.module(i, "ffn_in"), arch.module(i, "ffn_out")
        bias = w1.bias if w1.bias is not None else torch.zeros(nf)
        pts = torch.cat([w1.weight.detach(), bias.detach()[:, None], w2.weight.detach().T], dim=1)
        out[i, :nf] = hull_scores(pts, gamma, iters)
    return out


@dataclass
class UnitStats:
    """Label-free statistics of every unit, shaped like the masks (padding entries 0)."""

    head_energy: torch.Tensor  # [L, Hmax]
    neuron_energy: torch.Tensor  # [L, Fmax]
    neuron_votes: torch.Tensor  # [L, Fmax], in [0, 1]
    examples: int
    tokens: int


def _inv_var(z: torch.Tensor, eps: float) -> torch.Tensor:
    return 1.0 / (z.float().var(-1, unbiased=False) + eps)


def _weighted_rows(norm: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """g * (w - mean over the hidden axis) for a weight `w` [H, ...] feeding a LayerNorm."""
    centred = w - w.mean(0, keepdim=True)
    g = norm.weight.detach().float() if getattr(norm, "weight", None) is not None else torch.ones(w.shape[0])
    return centred * g.view(-1, *([1] * (w.dim() - 1)))


@torch.no_grad()
def activation_stats(model: nn.Module, batches: list[dict[str, Any]], cls_last: bool = True) -> UnitStats:
    """D2 statistics of heads and neurons from forward passes on unlabeled `batches` (only the
    model inputs of a batch are read; no gradient is taken)."""
    arch, st = architecture(model), structure(model)
    L, d = st.num_layers, st.head_size
    head_sum, neuron_sum = torch.zeros(L, st.max_heads), torch.zeros(L, st.max_neurons)
    votes = torch.zeros(L, st.max_neurons)
    token_count = torch.zeros(L)
    examples = tokens = 0
    cols = []  # per layer: (attention block's per-head weighted W_o [H, nh, d], FFN's column energies [F])
    for i in range(L):
        w_o = arch.module(i, "attn_out").weight.detach().float().view(st.hidden_size, st.heads[i], d)
        c2 = _weighted_rows(arch.module(i, "ffn_norm"), arch.module(i, "ffn_out").weight.detach().float())
        cols.append((_weighted_rows(arch.module(i, "attn_norm"), w_o), c2.pow(2).sum(0)))
    got: dict[tuple[int, str], torch.Tensor] = {}

    def grab(key: tuple[int, str]) -> Any:
        def hook(_m: nn.Module, args: tuple) -> None:
            got[key] = args[0].detach()
        return hook

    handles = [arch.module(i, role).register_forward_pre_hook(grab((i, role)))
               for i in range(L) for role in ("attn_out", "attn_norm", "ffn_out", "ffn_norm")]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            got.clear()
            inputs = model_inputs(batch)
            model(**inputs)
            mask = inputs["attention_mask"].float() if "attention_mask" in inputs else \
                torch.ones(inputs["input_ids"].shape, dtype=torch.float)
            examples, tokens = examples + mask.shape[0], tokens + int(mask.sum())
            for i in range(L):
                m = mask.clone()
                if cls_last and i == L - 1:
                    m.zero_()
                    m[:, 0] = 1.0
                token_count[i] += m.sum()
                w_h, col_energy = cols[i]
                if st.heads[i]:
                    ctx = got[(i, "attn_out")].float().view(*m.shape, st.heads[i], d)
                    out = torch.einsum("btkd,hkd->btkh", ctx, w_h).pow(2).sum(-1)  # [B, T, nh]
                    inv = _inv_var(got[(i, "attn_norm")], arch.module(i, "attn_norm").eps)
                    head_sum[i, : st.heads[i]] += (out * (inv * m)[..., None]).sum((0, 1))
                if st.neurons[i]:
                    a = got[(i, "ffn_out")].float()
                    inv = _inv_var(got[(i, "ffn_norm")], arch.module(i, "ffn_norm").eps)
                    e = a.pow(2) * col_energy * (inv * m)[..., None]  # [B, T, F]
                    neuron_sum[i, : st.neurons[i]] += e.sum((0, 1))
                    per_example = e.sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)  # [B, F]
                    ranks = per_example.argsort(dim=1, stable=True).argsort(dim=1).float()
                    votes[i, : st.neurons[i]] += (ranks / max(1, st.neurons[i] - 1)).sum(0)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not examples:
        raise ValueError("activation_stats: no batches")
    per_token = token_count.clamp_min(1.0)[:, None]
    return UnitStats(head_sum / per_token, neuron_sum / per_token, votes / examples, examples, tokens)


def layer_percentiles(scores: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Per layer, each unit's rank among `units` (bool, like `scores`) as a fraction in [0, 1]
    (1: the highest score; ties by position); 0 elsewhere."""
    out = torch.zeros_like(scores, dtype=torch.float)
    for i in range(scores.shape[0]):
        idx = units[i].nonzero().flatten()
        if len(idx) == 0:
            continue
        ranks = scores[i, idx].argsort(stable=True).argsort().float()
        out[i, idx] = ranks / max(1, len(idx) - 1) if len(idx) > 1 else torch.ones(1)
    return out


def merged_neuron_scores(energy: torch.Tensor, votes: torch.Tensor, representative: torch.Tensor,
                         free: torch.Tensor, data_weight: float, representative_weight: float) -> torch.Tensor:
    """Scores for the budgeted search: per layer, the free neurons' energies sorted high to low,
    handed out in the order of the merged ranking `data_weight * pct(votes) +
    representative_weight * pct(representative)`; units that are not free keep their energy."""
    total = data_weight + representative_weight
    merged = (data_weight * layer_percentiles(votes, free)
              + representative_weight * layer_percentiles(representative, free)) / total
    out = energy.clone().float()
    for i in range(energy.shape[0]):
        idx = free[i].nonzero().flatten()
        if len(idx) == 0:
            continue
        values = torch.sort(energy[i, idx].float(), descending=True).values
        order = idx[torch.sort(merged[i, idx], descending=True, stable=True).indices]
        out[i, order] = values
    return out
