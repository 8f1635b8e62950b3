"""`structured_prune`: remove whole attention heads and FFN neurons, one-shot or gradually.

Budgets (each a fraction in (0, 1)): `heads` and/or `neurons` (of the targeted units), or
`flops` (of the encoder's MACs at `seq_len`, `workbench.prune.flops`). Importance:
`magnitude` (weight L1), `taylor` (sum |dL/dmask|, Michel et al.) or `fisher` (sum of squared
mask gradients). Under a `flops` budget, Taylor and Fisher scores go through Kwon et al.'s mask
search (`workbench.prune.search.search_budget`); magnitude scores of heads and of neurons are
not on one scale, so magnitude removes the same fraction of the targeted heads and neurons
(rounded up: the budget is always met).

* `schedule: oneshot`: scores from `num_examples` training examples (Taylor/Fisher), masks,
  then the model shrinks physically in `apply` (the stage needs no training; one that trains
  afterwards fine-tunes the smaller model).
* `schedule: gradual`: the masks are applied by hooks during training and follow Zhu & Gupta's
  cubic schedule from 0 to the budget between `start` and `end` (fractions of the steps),
  updated every `frequency` optimizer steps; removed units stay removed; Taylor/Fisher scores
  are accumulated from the mask gradients of the stage's own loss since the last update. At
  `on_train_end` the final budget is applied and the model shrinks physically.

What happened is written to `model.config.workbench_pruning` (saved in config.json):
`{"stage", "method", "pruning_seconds", "seq_len", "macs_before", "macs_after", "flops_removed",
"heads", "neurons", ...}`.
"""
from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from workbench.config import fail, fail_if_set
from workbench.prune.flops import encoder_macs, head_macs, neuron_macs
from workbench.prune.search import protect_per_layer, remove_lowest, search_budget
from workbench.prune.structure import (
    MaskHooks, fisher_scores, magnitude_scores, mask_gradients, mean_length, selected_units,
    shrink, structure, taylor_scores,
)
from workbench.recipes.base import Recipe, TrainState, register_recipe
from workbench.recipes.prune.common import check_fraction, check_max_heads, record_pruning, training_batches
from workbench.recipes.prune.magnitude import cubic_sparsity
from workbench.targets import validate_target_syntax


@dataclass
class StructuredPruneConfig:
    heads: float | None = None
    """Fraction of the targeted heads to remove."""
    neurons: float | None = None
    """Fraction of the targeted FFN neurons to remove."""
    flops: float | None = None
    """Fraction of the encoder's FLOPs (MACs) to remove (instead of `heads` / `neurons`)."""
    criterion: Literal["magnitude", "taylor", "fisher"] = "magnitude"
    schedule: Literal["oneshot", "gradual"] = "oneshot"
    start: float = 0.0
    end: float = 0.7
    frequency: int = 10
    num_examples: int = 256
    """Training examples for one-shot Taylor / Fisher scores."""
    batch_size: int = 32
    seq_len: float | None = None
    """Sequence length for FLOPs; None: the mean length of `num_examples` training examples."""
    max_heads_removed: int | None = None
    """At most this many heads removed per layer (None: all of them may go)."""
    targets: list[str] | None = None
    """Layers (`bert.encoder.layer.3`) or their Linear modules (attention -> heads, FFN ->
    neurons), exact or `re:`; None: every layer."""

    def validate(self, where: str) -> None:
        if self.flops is None and self.heads is None and self.neurons is None:
            fail(where, "flops", "or 'heads' / 'neurons' must be given: what fraction to remove")
        if self.flops is not None and (self.heads is not None or self.neurons is not None):
            fail(where, "flops", "is a budget of its own: give either 'flops' or 'heads' / 'neurons'")
        for key in ("heads", "neurons", "flops"):
            check_fraction(where, key, getattr(self, key))
        if not 0.0 <= self.start < self.end <= 1.0:
            fail(where, "start", f"and 'end' must satisfy 0 <= start < end <= 1, got {self.start}, {self.end}")
        for key in ("frequency", "num_examples", "batch_size"):
            if getattr(self, key) < 1:
                fail(where, key, f"must be >= 1, got {getattr(self, key)}")
        if self.seq_len is not None and self.seq_len <= 0:
            fail(where, "seq_len", f"must be > 0, got {self.seq_len}")
        if self.max_heads_removed is not None and self.max_heads_removed < 0:
            fail(where, "max_heads_removed", f"must be >= 0, got {self.max_heads_removed}")
        if self.schedule == "oneshot":
            fail_if_set(self, where, ("start", "end", "frequency"),
                        "schedule: oneshot removes once, before training (these shape the gradual schedule)")
        if self.targets is not None:
            validate_target_syntax(self.targets, where)


@register_recipe("structured_prune")
class StructuredPrune(Recipe):
    """Remove heads and FFN neurons by importance, one-shot or on a cubic schedule, then shrink."""

    Config = StructuredPruneConfig
    uses_architecture = True

    @classmethod
    def output_width(cls, config: StructuredPruneConfig, width: int | None) -> int | None:
        return width if config.heads is None and config.flops is None else None  # heads go per layer

    @classmethod
    def requires_training(cls, config: StructuredPruneConfig) -> bool:
        return config.schedule == "gradual"

    def __init__(self, config: StructuredPruneConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.head_keep: torch.Tensor | None = None
        self.neuron_keep: torch.Tensor | None = None
        self.head_scores: torch.Tensor | None = None
        self.neuron_scores: torch.Tensor | None = None
        self.fraction = 0.0
        self.hooks: MaskHooks | None = None
        self.seconds = 0.0
        self.seq_len: float | None = None

    # ------------------------------------------------------------------ budget -> keep masks
    def _prepare(self, model: nn.Module) -> None:
        cfg = self.config
        self.head_free, self.neuron_free = selected_units(model, cfg.targets, self.where)
        if (cfg.heads is not None and not self.head_free.any()) or (cfg.neurons is not None and not self.neuron_free.any()):
            key = "heads" if cfg.heads is not None and not self.head_free.any() else "neurons"
            fail(self.where, "targets", f"selects no {'attention head' if key == 'heads' else 'FFN neuron'}, "
                 f"but '{key}' asks to remove some")
        check_max_heads(model, cfg.max_heads_removed, self.head_free, self.where)
        self.valid_h, self.valid_f = structure(model).valid()
        if self.head_keep is None:
            self.head_keep, self.neuron_keep = self.valid_h.clone(), self.valid_f.clone()
        if self.seq_len is None:
            self.seq_len = cfg.seq_len
        if self.seq_len is None and cfg.flops is not None:
            self.seq_len = mean_length(training_batches(self.ctx, cfg.num_examples, cfg.batch_size, self.where))
        self.macs_before = encoder_macs(model, self.seq_len or 128.0)["total"]

    def _choose(self, model: nn.Module, fraction: float) -> None:
        """Update the keep masks to remove `fraction` of the final budget's units."""
        cfg, st = self.config, structure(model)
        hs, ns = self._scores(model)
        seq = self.seq_len or 128.0
        cost_h, cost_n = head_macs(st.hidden_size, st.head_size, seq), neuron_macs(st.hidden_size, seq)
        removed_h = self.head_free & ~self.head_keep
        if cfg.flops is not None and cfg.criterion != "magnitude":
            budget = (1.0 - fraction * cfg.flops) * self.macs_before
            free_h, free_n = self.head_free & self.head_keep, self.neuron_free & self.neuron_keep
            fixed_h = (self.head_keep & ~free_h) | protect_per_layer(hs, free_h, removed_h, cfg.max_heads_removed)
            found = search_budget(hs, ns, free_h, free_n, fixed_h, self.neuron_keep & ~free_n, cost_h, cost_n, budget)
            if found is None:
                fail(self.where, "flops", f"cannot be met: the units kept by 'targets' / 'max_heads_removed' "
                     f"alone exceed {1 - fraction * cfg.flops:.0%} of the encoder's MACs")
            self.head_keep, self.neuron_keep = found
            return
        if cfg.flops is not None:  # magnitude: the same fraction of targeted heads and neurons
            target_macs = float(self.head_free.sum()) * cost_h + float(self.neuron_free.sum()) * cost_n
            share = fraction * cfg.flops * self.macs_before / max(target_macs, 1e-9)
            if share > 1.0:
                fail(self.where, "flops", f"cannot be met: the targeted units hold only "
                     f"{target_macs / self.macs_before:.0%} of the encoder's MACs")
            h_frac = n_frac = share
        else:
            h_frac, n_frac = fraction * (cfg.heads or 0.0), fraction * (cfg.neurons or 0.0)
        n_h = math.ceil(h_frac * int(self.head_free.sum()) - 1e-9) - int(removed_h.sum())
        n_n = math.ceil(n_frac * int(self.neuron_free.sum()) - 1e-9) - int((self.neuron_free & ~self.neuron_keep).sum())
        keep_h = remove_lowest(hs, self.head_free, self.head_keep, n_h, cfg.max_heads_removed, removed_h)
        if keep_h is None:
            fail(self.where, "max_heads_removed", f"= {cfg.max_heads_removed} per layer leaves too few heads to "
                 f"remove {h_frac:.0%} of the targeted heads")
        self.head_keep = keep_h
        self.neuron_keep = remove_lowest(ns, self.neuron_free, self.neuron_keep, n_n)

    def _scores(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        if cfg.criterion == "magnitude":
            return magnitude_scores(model)
        if self.head_scores is None:  # one-shot: gradients on training examples
            batches = training_batches(self.ctx, cfg.num_examples, cfg.batch_size, self.where)
            hg, ng = mask_gradients(model, batches)
            score = fisher_scores if cfg.criterion == "fisher" else taylor_scores
            return score(hg), score(ng)
        return self.head_scores, self.neuron_scores

    def _finish(self, model: nn.Module) -> None:
        t0 = time.perf_counter()
        summary = shrink(model, self.head_keep.float(), self.neuron_keep.float())
        self.seconds += time.perf_counter() - t0
        seq = self.seq_len or 128.0
        after = encoder_macs(model, seq)["total"]
        record_pruning(model, {"stage": self.ctx.stage, "method": self.name, "criterion": self.config.criterion,
                               "schedule": self.config.schedule, "pruning_seconds": self.seconds, "seq_len": seq,
                               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                               "macs_before": self.macs_before, "macs_after": after,
                               "flops_removed": 1.0 - after / self.macs_before, **summary})

    # ------------------------------------------------------------------ recipe hooks
    def apply(self, model: nn.Module) -> nn.Module:
        t0 = time.perf_counter()
        self._prepare(model)
        if self.config.schedule == "oneshot":
            self._choose(model, 1.0)
            self.seconds = time.perf_counter() - t0
            self._finish(model)
        return model

    def on_train_begin(self, state: TrainState) -> None:
        self._prepare(state.model)
        grad = self.config.criterion != "magnitude"
        self.hooks = MaskHooks(state.model, self.head_keep.float().requires_grad_(grad),
                               self.neuron_keep.float().requires_grad_(grad))
        if grad and self.head_scores is None:
            self.head_scores, self.neuron_scores = torch.zeros_like(self.valid_h, dtype=torch.float), \
                torch.zeros_like(self.valid_f, dtype=torch.float)

    def on_after_optimizer_step(self, state: TrainState) -> None:
        cfg, hooks = self.config, self.hooks
        if hooks is None:
            return
        t0 = time.perf_counter()
        if cfg.criterion != "magnitude":
            for mask, acc in ((hooks.head_mask, self.head_scores), (hooks.neuron_mask, self.neuron_scores)):
                if mask.grad is not None:
                    acc += mask.grad.abs() if cfg.criterion == "taylor" else mask.grad.pow(2)
                    mask.grad = None
        if state.step % cfg.frequency == 0 or state.step == state.total_steps:
            target = cubic_sparsity(state.step, state.total_steps, 0.0, 1.0, cfg.start, cfg.end)
            if target > self.fraction + 1e-9:
                self._update(state.model, target)
        state.logs["pruned_fraction"] = self.fraction
        self.seconds += time.perf_counter() - t0

    def _update(self, model: nn.Module, fraction: float) -> None:
        self._choose(model, fraction)
        self.fraction = fraction
        grad = self.config.criterion != "magnitude"
        self.hooks.head_mask = self.head_keep.float().requires_grad_(grad)
        self.hooks.neuron_mask = self.neuron_keep.float().requires_grad_(grad)
        if grad:
            self.head_scores.zero_()
            self.neuron_scores.zero_()

    def on_train_end(self, state: TrainState) -> None:
        if self.hooks is None:
            return
        if self.fraction < 1.0:
            t0 = time.perf_counter()
            if self.config.criterion != "magnitude" and not bool(self.head_scores.any() or self.neuron_scores.any()):
                self.head_scores = None  # nothing accumulated since the last update: fresh scores
            self._update(state.model, 1.0)
            self.seconds += time.perf_counter() - t0
        self.hooks.remove()
        self.hooks = None
        self._finish(state.model)

    def state_dict(self) -> dict[str, Any]:
        return {"head_keep": self.head_keep, "neuron_keep": self.neuron_keep, "fraction": self.fraction,
                "head_scores": self.head_scores, "neuron_scores": self.neuron_scores, "seconds": self.seconds,
                "seq_len": self.seq_len}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
