"""`smoothquant`: migrate activation outliers into the weights before int8 (Xiao et al., 2023).

A few input channels of a transformer Linear carry values 10-100x larger than the rest, so a
per-tensor activation grid wastes almost all its levels on them. SmoothQuant rescales each input
channel j by `s_j = max|X_j|^alpha / max|W[:, j]|^(1 - alpha)` (X from a calibration pass over
training examples): the input is divided by s, the weight's column j is multiplied by it, and
`(x / s) @ (W * s)^T == x @ W^T`, an exact equivalence in fp32. alpha = 0 leaves the activations
alone, alpha = 1 moves all their range into the weights; the paper uses 0.5.

Where the 1/s goes. The paper folds it into the LayerNorm before Q/K/V and FFN-in, which is
exact in pre-LN models (OPT, BLOOM), whose LayerNorm output feeds only those Linears. The
encoders here (BERT, DistilBERT, RoBERTa: see `workbench.models.arch`) are **post-LN**: the
LayerNorm output is also the residual stream, and scaling it would change the residual (and the
next LayerNorm is not invariant to per-channel scaling), so folding there is *not* equivalent.
The 1/s is therefore kept on the Linear itself as a forward pre-hook (`InputSmoothing`);
`static_int8` folds it into its input quantization step (`x * (1/s)` then the per-tensor
grid), and torch's `dynamic_int8` keeps module pre-hooks on the layers it swaps. A hook is not
saved by `save_pretrained`, so the recipe must be followed by `static_int8` or `dynamic_int8`
in the same stage (checked before any work).

Default targets: the Linears that read a LayerNorm's output (query, key, value, ffn_in of every
layer, found by the architecture adapter), where the outlier channels are.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from workbench.config import fail
from workbench.forward import model_inputs
from workbench.models.arch import architecture
from workbench.recipes.base import Recipe, StageCheck, register_recipe
from workbench.recipes.prune.common import training_batches
from workbench.targets import resolve_targets, validate_target_syntax

SMOOTHED_ROLES = ("query", "key", "value", "ffn_in")
"""Linears whose input is a LayerNorm output (the outlier channels)."""
QUANTIZERS = ("static_int8", "dynamic_int8")
"""Recipes that must follow `smoothquant` in its stage (they consume the smoothing)."""


class InputSmoothing:
    """Forward pre-hook multiplying a Linear's input by `inv_scale` (1/s) per input channel. A
    plain picklable object (not a closure) so that deep copies and torch's module swap keep it."""

    def __init__(self, inv_scale: torch.Tensor) -> None:
        self.inv_scale = inv_scale

    def __call__(self, _module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0] * self.inv_scale.to(args[0].dtype),) + tuple(args[1:])


def pop_smoothing(module: nn.Module) -> InputSmoothing | None:
    """Remove the `InputSmoothing` hooks of `module` and return them as one (None: there were none)."""
    hooks = module._forward_pre_hooks
    keys = [k for k, h in hooks.items() if isinstance(h, InputSmoothing)]
    if not keys:
        return None
    inv = torch.ones_like(hooks[keys[0]].inv_scale)
    for k in keys:
        inv = inv * hooks.pop(k).inv_scale
    return InputSmoothing(inv)


def smoothing_scales(act_amax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """`s_j = max|X_j|^alpha / max|W[:, j]|^(1 - alpha)`; 1 for a channel that is zero on either
    side (nothing to migrate), clamped to [1e-5, 1e5] so that neither side under/overflows."""
    w_amax = weight.detach().abs().amax(dim=0).float()
    a = act_amax.float()
    s = a.pow(alpha) / w_amax.pow(1 - alpha)
    s = torch.where((a > 0) & (w_amax > 0), s, torch.ones_like(s))
    return s.clamp(1e-5, 1e5)


@torch.no_grad()
def channel_absmax(model: nn.Module, linears: dict[str, nn.Module], batches: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Per-input-channel max |x| of each Linear's input over `batches`. Registered after any
    earlier hook, so an earlier smoothing is already applied to what is measured."""
    amax: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Any:
        def record(_m: nn.Module, args: tuple[Any, ...]) -> None:
            cur = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0).float()
            amax[name] = torch.maximum(amax[name], cur) if name in amax else cur
        return record

    run_with_pre_hooks(model, {name: hook(name) for name in linears}, batches)
    return amax


@torch.no_grad()
def run_with_pre_hooks(model: nn.Module, hooks: dict[str, Any], batches: list[dict[str, Any]]) -> None:
    """A calibration pass: `batches` through `model` in eval mode with a forward pre-hook on each
    named module (appended after its other hooks), all removed afterwards."""
    handles = [model.get_submodule(name).register_forward_pre_hook(hook) for name, hook in hooks.items()]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model(**model_inputs(batch))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def smooth_linear(linear: nn.Linear, scales: torch.Tensor) -> None:
    """Multiply the weight's columns by `scales` and divide the input by them (a pre-hook)."""
    with torch.no_grad():
        linear.weight.mul_(scales.to(linear.weight.dtype)[None, :])
    linear.register_forward_pre_hook(InputSmoothing(1.0 / scales))


def check_calibration_fields(cfg: Any, where: str) -> None:
    """The calibration pass's fields (num_examples, batch_size) and the targets' syntax, which
    the calibrating recipes (smoothquant, static_int8) share."""
    if cfg.num_examples < 1:
        fail(where, "num_examples", f"must be at least 1, got {cfg.num_examples!r}")
    if cfg.batch_size < 1:
        fail(where, "batch_size", f"must be at least 1, got {cfg.batch_size!r}")
    if cfg.targets is not None:
        validate_target_syntax(cfg.targets, where)


@dataclass
class SmoothQuantConfig:
    alpha: float = 0.5
    """Migration strength in [0, 1]: 0 keeps the activations, 1 moves their range into the weights."""
    num_examples: int = 256
    """Training examples in the calibration pass."""
    batch_size: int = 32
    targets: list[str] | None = None
    """Linears to smooth, exact or `re:` (None: query, key, value and ffn_in of every layer)."""

    def validate(self, where: str) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            fail(where, "alpha", f"must be in [0, 1], got {self.alpha!r} (the paper uses 0.5)")
        check_calibration_fields(self, where)


@register_recipe("smoothquant")
class SmoothQuant(Recipe):
    """Per-channel smoothing of Linear inputs (exact in fp32), for a following int8 recipe."""

    Config = SmoothQuantConfig
    inference_only = True  # its smoothing lives in hooks that save_pretrained drops
    uses_architecture = True

    @classmethod
    def check_stage(cls, config: SmoothQuantConfig, check: StageCheck) -> None:
        after = check.recipes[check.recipes.index("smoothquant") + 1:] if "smoothquant" in check.recipes else []
        if not any(r in QUANTIZERS for r in after):
            fail(check.where, "recipes", "needs 'static_int8' or 'dynamic_int8' after it in the same stage: the "
                 "smoothing is a per-channel input scale that only a quantizer consumes (it is not saved)")

    def chosen(self, model: nn.Module) -> dict[str, nn.Linear]:
        if self.config.targets is not None:
            return resolve_targets(model, self.config.targets, self.where)
        arch = architecture(model, self.where)
        return {arch.module_name(i, role): arch.module(i, role)
                for i in range(arch.num_layers) for role in SMOOTHED_ROLES}

    def apply(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        self.chosen(model)  # bad targets / unsupported family fail before any work
        model = copy.deepcopy(model)
        linears = {n: m for n, m in self.chosen(model).items() if m.in_features > 0 and m.out_features > 0}
        batches = training_batches(self.ctx, cfg.num_examples, cfg.batch_size, self.where)
        amax = channel_absmax(model, linears, batches)
        for name, linear in linears.items():
            if name in amax:
                smooth_linear(linear, smoothing_scales(amax[name], linear.weight, cfg.alpha))
        return model
