"""Choosing which heads and neurons to remove: by count, under a MAC budget, and rearranged.

Every function works on padded masks / scores `[L, Hmax]`, `[L, Fmax]` and three kinds of unit:
*free* units (the search may remove them), *fixed* units (kept no matter what: outside the
`targets:` selection, or protected by a per-layer cap) and the rest (already removed, or padding
of an uneven model), which stay removed.

* `remove_lowest`: remove `n` free units of lowest score, globally, at most `max_per_layer` per
  layer (the per-layer cap counts units already removed in that layer).
* `protect_per_layer`: the free units that a cap `max_removed` per layer must keep (the highest
  scoring ones of each layer beyond the cap).
* `search_budget`: Kwon et al. (2022), section 4.1: rank free heads and free neurons globally by
  importance; for every number of kept heads give the rest of the MAC budget to the most
  important neurons; keep the split with the largest total importance.
* `rearrange`: Kwon et al., section 4.2: per layer, keep the number of removed units and swap
  greedily so that the squared norm of the summed per-batch gradients of the removed set is small
  (the interaction the diagonal Fisher misses).
"""
from __future__ import annotations

import torch


def _check(scores: torch.Tensor, free: torch.Tensor) -> None:
    if scores.shape != free.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and masks {tuple(free.shape)} differ in shape")


def remove_lowest(scores: torch.Tensor, free: torch.Tensor, keep: torch.Tensor, n: int,
                  max_per_layer: int | None = None, removed_before: torch.Tensor | None = None
                  ) -> torch.Tensor | None:
    """A keep mask (bool, like `scores`) equal to `keep` with `n` more free units removed, lowest
    score first (ties by position). None when the cap makes `n` impossible."""
    _check(scores, free)
    out = keep.clone()
    if n <= 0:
        return out
    per_layer = (removed_before if removed_before is not None else torch.zeros_like(free)).sum(1).clone()
    candidates = (free & keep).flatten().nonzero().flatten()
    order = candidates[torch.sort(scores.flatten()[candidates], stable=True).indices]
    width = scores.shape[1]
    done = 0
    for idx in order.tolist():
        layer = idx // width
        if max_per_layer is not None and int(per_layer[layer]) >= max_per_layer:
            continue
        out.view(-1)[idx] = False
        per_layer[layer] += 1
        done += 1
        if done == n:
            return out
    return None


def protect_per_layer(scores: torch.Tensor, free: torch.Tensor, removed: torch.Tensor,
                      max_removed: int | None) -> torch.Tensor:
    """Free units to keep so that no layer loses more than `max_removed` units in all (`removed`:
    those already removed): the highest-scoring free units of each layer beyond the cap."""
    protect = torch.zeros_like(free)
    if max_removed is None:
        return protect
    for i in range(scores.shape[0]):
        idx = free[i].nonzero().flatten()
        must_keep = len(idx) - max(0, max_removed - int(removed[i].sum()))
        if must_keep <= 0:
            continue
        top = idx[torch.sort(scores[i, idx], descending=True, stable=True).indices[:must_keep]]
        protect[i, top] = True
    return protect


def search_budget(head_scores: torch.Tensor, neuron_scores: torch.Tensor,
                  head_free: torch.Tensor, neuron_free: torch.Tensor,
                  head_fixed: torch.Tensor, neuron_fixed: torch.Tensor,
                  head_cost: float, neuron_cost: float, budget: float
                  ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Keep masks (bool) whose MACs (`head_cost` per kept head, `neuron_cost` per kept neuron)
    stay within `budget`, maximising the summed importance of the kept free units; fixed units
    are always kept. None when the fixed units alone exceed the budget."""
    _check(head_scores, head_free)
    _check(neuron_scores, neuron_free)
    head_free, neuron_free = head_free & ~head_fixed, neuron_free & ~neuron_fixed
    left = budget - float(head_fixed.sum()) * head_cost - float(neuron_fixed.sum()) * neuron_cost
    if left < -1e-6 * max(1.0, budget):
        return None
    h_idx = head_free.flatten().nonzero().flatten()
    n_idx = neuron_free.flatten().nonzero().flatten()
    h_sorted = torch.sort(head_scores.flatten()[h_idx].double(), descending=True, stable=True)
    n_sorted = torch.sort(neuron_scores.flatten()[n_idx].double(), descending=True, stable=True)
    h_cum = torch.cat([torch.zeros(1, dtype=torch.float64), h_sorted.values.cumsum(0)])
    n_cum = torch.cat([torch.zeros(1, dtype=torch.float64), n_sorted.values.cumsum(0)])
    best, best_k, best_n = None, 0, 0
    for k in range(len(h_idx) + 1):
        rest = left - k * head_cost
        if rest < -1e-9:
            break
        n = min(len(n_idx), int(rest // neuron_cost + 1e-9)) if neuron_cost > 0 else len(n_idx)
        total = float(h_cum[k] + n_cum[n])
        if best is None or total > best:
            best, best_k, best_n = total, k, n
    head_keep, neuron_keep = head_fixed.clone(), neuron_fixed.clone()
    head_keep.view(-1)[h_idx[h_sorted.indices[:best_k]]] = True
    neuron_keep.view(-1)[n_idx[n_sorted.indices[:best_n]]] = True
    return head_keep, neuron_keep


def _greedy(removed: list[int], kept: list[int], grads: torch.Tensor) -> list[int]:
    """Kwon's greedy swap on one layer: `grads` [units, batches]; returns the new removed set."""
    sq = grads.pow(2).sum(1)
    pool = removed + kept
    order = sorted(pool, key=lambda u: (float(sq[u]), u))
    chosen = order[: len(removed)]
    for u in order[len(removed):]:
        chosen.append(u)
        vecs = grads[chosen]
        complement = vecs.sum(0, keepdim=True) - vecs
        del chosen[int(complement.pow(2).sum(1).argmin())]
    return chosen


def rearrange(keep: torch.Tensor, free: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Kwon's mask rearrangement of a keep mask (bool [L, X]) within its free units, layer by
    layer; `grads` are the per-batch mask gradients [N, L, X]. The count of removed units per
    layer is unchanged."""
    out = keep.clone()
    for i in range(keep.shape[0]):
        units = free[i].nonzero().flatten().tolist()
        removed = [u for u in units if not bool(keep[i, u])]
        kept = [u for u in units if bool(keep[i, u])]
        if not removed or not kept:
            continue
        g = grads[:, i, :].T.double()  # [X, N]
        new_removed = set(_greedy(removed, kept, g))
        for u in units:
            out[i, u] = u not in new_removed
    return out
