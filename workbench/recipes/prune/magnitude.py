"""Magnitude pruning, one-shot or gradual (Zhu & Gupta, 2017), in unstructured or block patterns.

A *block* `(r, c)` groups `r` output rows by `c` input columns of a Linear weight `[N, K]`:
`(1, 1)` is unstructured, `(1, 4)` is four consecutive weights along K (the layout our sparse
int8 kernels skip, as in "Fast DistilBERT on CPUs"), `(4, 1)` four output channels. A block's
score is the L1 norm of its weights; the lowest-scoring blocks of each layer are zeroed so that
exactly `round(sparsity * n_blocks)` blocks are zero. With `scope: global` the blocks of all
pruned layers are ranked together instead (as `torch.nn.utils.prune.global_unstructured` ranks
weights): `sparsity` is then the overall fraction and each layer's follows from its weights.
Raw magnitudes of different layers are on different scales: on the demo student at 90 % in
16x64 blocks the global ranking emptied whole value, output and FFN Linears and lost 2.2 points
(`results/tile_sparsity_90/`); per layer is the default.

An *N:M pattern* (`pattern: "2:4"`) instead keeps exactly the N largest-|w| weights of every M
consecutive weights along each row's input dimension (the layout of N:M sparse tensor cores);
the layer's sparsity is then 1 - N/M. Gradually, the weights kept per group step down from M to
N as the cubic schedule's sparsity grows.

Gradual pruning follows the cubic schedule

    s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_1 - t_0)) ** 3,   t_0 <= t <= t_1,

updated every `frequency` optimizer steps, and re-applies the masks after *every* optimizer
step so that pruned weights stay exactly zero through training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from workbench.config import KEY_OMITS_DEFAULT, ConfigError, fail, fail_if_set
from workbench.models.arch import architecture
from workbench.recipes.base import Recipe, TrainState, register_recipe
from workbench.recipes.prune.nm_pattern import check_pattern_fits, nm_keep, nm_mask, parse_pattern, validate_pattern
from workbench.targets import resolve_targets, validate_target_syntax


def prunable_linears(model: nn.Module, targets: list[str] | None = None,
                     where: str = "magnitude_prune") -> dict[str, nn.Linear]:
    """The Linear layers a pruning recipe acts on, by qualified name, in model order.

    targets=None: every encoder Linear of the model's family (`workbench.models.arch`; never the
    pooler or classifier head); otherwise the `targets:` entries (exact names or `re:<pattern>`,
    see `workbench.targets`) among all of the model's Linears. ConfigError for an unsupported
    family (targets=None) or an entry that matches nothing.
    """
    if targets is None:
        linears = architecture(model, where).encoder_linears()
        plain = {name: m for name, m in linears.items() if isinstance(m, nn.Linear)}
        if len(plain) != len(linears):
            raise ConfigError(f"{where}: {type(model).__name__} holds quantized Linear layers; "
                              "prune before quantizing")
        return plain
    return resolve_targets(model, targets, where, kind=nn.Linear)


def block_scores(weight: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """L1 norm of each `block` of a 2-D weight; ragged edges are zero-padded."""
    r, c = block
    n, k = weight.shape
    padded = torch.nn.functional.pad(weight.detach().abs(), (0, (-k) % c, 0, (-n) % r))
    nb, kb = padded.shape[0] // r, padded.shape[1] // c
    return padded.reshape(nb, r, kb, c).sum(dim=(1, 3))


def keep_top(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A bool mask of `scores`' shape dropping exactly the `round(sparsity * numel)` lowest.
    Ties (e.g. already-zero blocks) break by position, so masks are deterministic. A selection
    (kthvalue) rather than a sort: ~7x faster, which matters to movement pruning's every step."""
    flat = scores.flatten()
    n_zero = int(round(sparsity * flat.numel()))
    if n_zero <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    cut = flat.kthvalue(n_zero).values
    drop = flat < cut
    tied = torch.nonzero(flat == cut).flatten()
    drop[tied[: n_zero - int(drop.sum())]] = True  # the earliest of the tied values go first
    return ~drop.reshape(scores.shape)


def expand_blocks(mask: torch.Tensor, block: tuple[int, int], shape: torch.Size | tuple[int, int]) -> torch.Tensor:
    """A per-block mask (or score) grid repeated over its `block`s and cropped to `shape`
    (differentiable, so a straight-through mask passes gradients back to per-block scores)."""
    r, c = block
    return mask.repeat_interleave(r, 0).repeat_interleave(c, 1)[: shape[0], : shape[1]]


def block_mask(weight: torch.Tensor, sparsity: float, block: tuple[int, int]) -> torch.Tensor:
    """A {0,1} mask with the same shape as `weight` zeroing the lowest-L1 blocks."""
    keep = keep_top(block_scores(weight, block), sparsity)
    return expand_blocks(keep, block, weight.shape).to(weight.dtype)


def global_block_masks(layers: dict[str, nn.Linear], sparsity: float, block: tuple[int, int]) -> dict[str, torch.Tensor]:
    """{0,1} masks dropping exactly `round(sparsity * n)` of the `n` blocks of all `layers`
    together, the lowest L1 first: each layer's own sparsity follows from its weights' scale."""
    scores = {name: block_scores(lin.weight, block) for name, lin in layers.items()}
    keep = keep_top(torch.cat([s.flatten() for s in scores.values()]), sparsity).split([s.numel() for s in scores.values()])
    return {name: expand_blocks(k.reshape(scores[name].shape), block, lin.weight.shape).to(lin.weight.dtype)
            for (name, lin), k in zip(layers.items(), keep)}


@torch.no_grad()
def magnitude_prune_(model: nn.Module, sparsity: float, block: tuple[int, int] = (1, 4),
                     targets: list[str] | None = None, where: str = "magnitude_prune",
                     pattern: tuple[int, int] | None = None, scope: str = "layer") -> dict[str, torch.Tensor]:
    """Prune `model` in place, one-shot, to `sparsity` per layer (the layers `prunable_linears`
    selects), or over all of them together with `scope="global"`; with an N:M `pattern` (which
    replaces `block`; per layer only), keep `nm_keep(sparsity)` of every M weights per row.
    Returns the masks by name."""
    layers = prunable_linears(model, targets, where)
    check_pattern_fits(layers, pattern, where)
    if scope == "global":
        masks = global_block_masks(layers, sparsity, tuple(block))
    elif pattern is None:
        masks = {name: block_mask(lin.weight, sparsity, tuple(block)) for name, lin in layers.items()}
    else:
        masks = {name: nm_mask(lin.weight.detach().abs(), nm_keep(sparsity, pattern), pattern[1]).to(lin.weight.dtype)
                 for name, lin in layers.items()}
    for name, lin in layers.items():
        lin.weight.mul_(masks[name])
    return masks


def cubic_sparsity(step: int, total_steps: int, initial: float, final: float,
                   start: float, end: float) -> float:
    """Zhu & Gupta's target sparsity after `step` of `total_steps` (start/end as fractions)."""
    t0, t1 = start * total_steps, max(end * total_steps, start * total_steps + 1)
    if step <= t0:
        return initial
    if step >= t1:
        return final
    return final + (initial - final) * (1.0 - (step - t0) / (t1 - t0)) ** 3


def weight_sparsity(model: nn.Module, targets: list[str] | None = None,
                    where: str = "weight_sparsity") -> dict[str, float]:
    """Fraction of exact zeros in each prunable layer's weight."""
    return {
        name: float((lin.weight == 0).float().mean())
        for name, lin in prunable_linears(model, targets, where).items()
    }


@dataclass
class MagnitudePruneConfig:
    sparsity: float
    """Final fraction of zero blocks in every pruned layer (with a `pattern`: 1 - N/M)."""
    block: tuple[int, int] = (1, 4)
    schedule: Literal["oneshot", "cubic"] = "oneshot"
    initial_sparsity: float = 0.0
    start: float = 0.0
    """Fraction of the stage's optimizer steps before gradual pruning begins."""
    end: float = 0.7
    """Fraction of the stage's optimizer steps at which `sparsity` is reached."""
    frequency: int = 10
    """Optimizer steps between mask updates (the schedule's Δt)."""
    targets: list[str] | None = None
    """Linear layers to prune: exact qualified names or `re:<pattern>` (full match), e.g.
    `["re:.*attention.*"]`. None: every encoder Linear (never the pooler or classifier)."""
    scope: Literal["layer", "global"] = field(default="layer", metadata=KEY_OMITS_DEFAULT)
    """`layer`: every pruned layer reaches `sparsity`; `global`: the blocks of all pruned layers
    are ranked together and `sparsity` is their overall fraction, so layers with larger weights
    keep more (a layer may lose every block). Blocks only, not with `pattern`."""
    pattern: str | None = field(default=None, metadata=KEY_OMITS_DEFAULT)
    """N:M sparsity, e.g. "2:4": keep the N largest-|w| of every M consecutive weights along each
    row's input dimension; replaces `block`; `sparsity` must then be 1 - N/M (0.5 for "2:4")."""

    def validate(self, where: str) -> None:
        validate_pattern(self, where)
        if not 0.0 <= self.sparsity < 1.0:
            fail(where, "sparsity", f"must be in [0, 1), got {self.sparsity}")
        if not 0.0 <= self.initial_sparsity <= self.sparsity:
            fail(where, "initial_sparsity", f"must be in [0, sparsity={self.sparsity}], got {self.initial_sparsity}")
        if any(b < 1 for b in self.block):
            fail(where, "block", f"must be two positive sizes like [1, 4], got {list(self.block)}")
        if not 0.0 <= self.start < self.end <= 1.0:
            fail(where, "start", f"and 'end' must satisfy 0 <= start < end <= 1, got {self.start}, {self.end}")
        if self.frequency < 1:
            fail(where, "frequency", f"must be >= 1, got {self.frequency}")
        if self.schedule == "oneshot":
            fail_if_set(self, where, ("initial_sparsity", "start", "end", "frequency"),
                        "schedule: oneshot prunes once, before training (these shape the cubic schedule)")
        if self.targets is not None:
            validate_target_syntax(self.targets, where)
        if self.scope == "global" and self.pattern is not None:
            fail(where, "scope", f'is global, but pattern "{self.pattern}" keeps N of every M weights in each row '
                 "group: it has no global ranking; leave 'scope' out")


@register_recipe("magnitude_prune")
class MagnitudePrune(Recipe):
    """Zero the smallest-magnitude weight blocks, once or gradually; masks persist in training."""

    Config = MagnitudePruneConfig
    uses_architecture = True

    @classmethod
    def requires_training(cls, config: MagnitudePruneConfig) -> bool:
        return config.schedule != "oneshot"  # gradual pruning happens between optimizer steps

    def __init__(self, config: MagnitudePruneConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.masks: dict[str, torch.Tensor] = {}
        self.current_sparsity = 0.0

    def apply(self, model: nn.Module) -> nn.Module:
        layers = prunable_linears(model, self.config.targets, self.where)  # fails early, naming the entry
        check_pattern_fits(layers, self._pattern(), self.where)
        if self.config.schedule == "oneshot":
            self._update(model, self.config.sparsity)
        elif self.config.initial_sparsity > 0:
            self._update(model, self.config.initial_sparsity)
        return model

    @torch.no_grad()
    def _update(self, model: nn.Module, sparsity: float) -> None:
        self.current_sparsity = sparsity
        cfg = self.config
        self.masks = magnitude_prune_(model, sparsity, cfg.block, cfg.targets, self.where, self._pattern(), cfg.scope)

    def _pattern(self) -> tuple[int, int] | None:
        return parse_pattern(self.config.pattern, self.where) if self.config.pattern else None

    @torch.no_grad()
    def _reapply(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        for name, mask in self.masks.items():
            modules[name].weight.mul_(mask)

    def on_train_begin(self, state: TrainState) -> None:
        self._reapply(state.model)

    def on_after_optimizer_step(self, state: TrainState) -> None:
        cfg = self.config
        if cfg.schedule == "cubic" and (state.step % cfg.frequency == 0 or state.step == state.total_steps):
            target = cubic_sparsity(state.step, state.total_steps, cfg.initial_sparsity,
                                    cfg.sparsity, cfg.start, cfg.end)
            if not math.isclose(target, self.current_sparsity):
                self._update(state.model, target)
        self._reapply(state.model)
        state.logs["sparsity"] = self.current_sparsity

    def on_train_end(self, state: TrainState) -> None:
        # Whatever the schedule reached, the stage ends at the configured sparsity.
        if not math.isclose(self.current_sparsity, self.config.sparsity):
            self._update(state.model, self.config.sparsity)
        self._reapply(state.model)

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks, "current_sparsity": self.current_sparsity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = state["masks"]
        self.current_sparsity = state["current_sparsity"]
