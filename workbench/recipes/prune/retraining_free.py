"""`retraining_free_prune`: Kwon et al. (2022), "A Fast Post-Training Pruning Framework for
Transformers" — structured pruning from a few thousand labelled examples, no retraining.

1. `num_examples` labelled training examples (the stage's training split, collated like the
   pipeline's batches); head masks [L, H] and neuron masks [L, F], all ones.
2. Fisher importance: per batch the gradient of the task loss w.r.t. each mask; importance =
   sum of squared gradients (`workbench.prune.structure`).
3. Mask search under a MAC budget (`flops`: the fraction of the encoder's FLOPs removed; MACs
   per head and per neuron at the sample's mean sequence length): `search.search_budget`.
4. Mask rearrangement per layer (`rearrange: true`): `search.rearrange`.
5. Mask tuning (`tune: true`): layer-wise least squares with SciPy's LSMR (`workbench.prune.tune`,
   damping `damp`, solved for scale - 1, a layer given up when the solve fails or a scale
   exceeds `max_scale`). The reference is, as in the authors' code, the model pruned to the
   milder budget sqrt(kept fraction) (`reference: sqrt`), or the unpruned model (`dense`).
6. The scales are folded into the output projections and the removed heads and neurons are
   dropped physically (`structure.shrink`): the stage saves a smaller model that reloads with
   `load_edited_model`.

One-shot: the stage needs no training (`requires_training` False). `model.config
.workbench_pruning` records `pruning_seconds`, the MACs before/after, the fraction of FLOPs
removed, the kept heads/neurons per layer and the per-layer least-squares fits.
"""
from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from workbench.config import fail
from workbench.prune.flops import encoder_macs, head_macs, neuron_macs
from workbench.prune.search import protect_per_layer, rearrange, search_budget
from workbench.prune.structure import fisher_scores, mask_gradients, mean_length, selected_units, shrink, structure
from workbench.prune.tune import tune_masks
from workbench.recipes.base import Recipe, register_recipe
from workbench.recipes.prune.common import check_budget_fields, check_max_heads, record_pruning, training_batches


@dataclass
class RetrainingFreePruneConfig:
    flops: float
    """Fraction of the encoder's FLOPs to remove, in (0, 1)."""
    num_examples: int = 2048
    batch_size: int = 32
    seq_len: float | None = None
    """Sequence length for the MAC budget; None: the mean length of the sample."""
    rearrange: bool = True
    tune: bool = True
    reference: Literal["sqrt", "dense"] = "sqrt"
    damp: float = 1.0
    max_scale: float = 10.0
    max_heads_removed: int | None = None
    targets: list[str] | None = None

    def validate(self, where: str) -> None:
        check_budget_fields(self, where)


def kwon_masks(model: nn.Module, head_grads: torch.Tensor, neuron_grads: torch.Tensor, kept: float,
               seq_len: float, head_free: torch.Tensor, neuron_free: torch.Tensor,
               max_heads_removed: int | None, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep masks (bool) from Fisher scores under a budget of `kept` x the encoder's MACs."""
    st = structure(model)
    valid_h, valid_f = st.valid()
    hs, ns = fisher_scores(head_grads), fisher_scores(neuron_grads)
    fixed_h = (valid_h & ~head_free) | protect_per_layer(hs, head_free, torch.zeros_like(head_free), max_heads_removed)
    budget = kept * encoder_macs(model, seq_len)["total"]
    found = search_budget(hs, ns, head_free, neuron_free, fixed_h, valid_f & ~neuron_free,
                          head_macs(st.hidden_size, st.head_size, seq_len), neuron_macs(st.hidden_size, seq_len), budget)
    if found is None:
        fail(where, "flops", f"cannot be met: the units kept by 'targets' / 'max_heads_removed' alone exceed "
             f"{kept:.0%} of the encoder's MACs")
    return found


@register_recipe("retraining_free_prune")
class RetrainingFreePrune(Recipe):
    """Fisher importance, MAC-budgeted mask search, rearrangement, LSMR mask tuning, shrink."""

    Config = RetrainingFreePruneConfig
    uses_architecture = True

    @classmethod
    def output_width(cls, config: RetrainingFreePruneConfig, width: int | None) -> int | None:
        return None  # the FLOPs budget may remove heads, a different number per layer

    def apply(self, model: nn.Module) -> nn.Module:
        cfg, where = self.config, self.where
        t0 = time.perf_counter()
        head_free, neuron_free = selected_units(model, cfg.targets, where)
        check_max_heads(model, cfg.max_heads_removed, head_free, where)
        batches = training_batches(self.ctx, cfg.num_examples, cfg.batch_size, where)
        seq = cfg.seq_len or mean_length(batches)
        macs_before = encoder_macs(model, seq)["total"]
        times: dict[str, float] = {}

        tick = time.perf_counter()
        hg, ng = mask_gradients(model, batches)
        times["fisher"] = time.perf_counter() - tick
        tick = time.perf_counter()
        kept = 1.0 - cfg.flops
        head_keep, neuron_keep = kwon_masks(model, hg, ng, kept, seq, head_free, neuron_free,
                                            cfg.max_heads_removed, where)
        times["search"] = time.perf_counter() - tick
        tick = time.perf_counter()
        if cfg.rearrange:
            # swaps within a layer keep its count of removed units, so a per-layer cap still holds
            head_keep = rearrange(head_keep, head_free, hg)
            neuron_keep = rearrange(neuron_keep, neuron_free, ng)
        times["rearrange"] = time.perf_counter() - tick
        tick = time.perf_counter()
        head_mask, neuron_mask, fits = head_keep.float(), neuron_keep.float(), []
        if cfg.tune:
            ref_h = ref_f = None
            if cfg.reference == "sqrt":
                ref_keep_h, ref_keep_f = kwon_masks(model, hg, ng, math.sqrt(kept), seq, head_free, neuron_free,
                                                    cfg.max_heads_removed, where)
                ref_h, ref_f = ref_keep_h.float(), ref_keep_f.float()
            head_mask, neuron_mask, report = tune_masks(model, batches, head_mask, neuron_mask, ref_h, ref_f,
                                                        damp=cfg.damp, max_scale=cfg.max_scale)
            fits = report.as_dicts()
        times["tune"] = time.perf_counter() - tick
        summary = shrink(model, head_mask, neuron_mask)
        macs_after = encoder_macs(model, seq)["total"]
        record_pruning(model, {
            "stage": self.ctx.stage, "method": self.name, "pruning_seconds": time.perf_counter() - t0,
            "seconds": {k: round(v, 2) for k, v in times.items()}, "examples": sum(len(b["labels"]) for b in batches),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "seq_len": seq, "macs_before": macs_before, "macs_after": macs_after,
            "flops_removed": 1.0 - macs_after / macs_before, **summary,
            "tuned_blocks": sum(1 for f in fits if f["applied"]), "fits": fits})
        return model
