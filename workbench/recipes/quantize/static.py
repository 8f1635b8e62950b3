"""`static_int8`: post-training static int8 quantization, emulated exactly in PyTorch.

A calibration pass runs `num_examples` training examples through the model; a forward
pre-hook on each targeted Linear feeds its input to an observer (`minmax`, `percentile` or
`mse`, see `workbench.quantize.observers`). Each targeted Linear then becomes an
`Int8Linear` (the recorded edit `int8_linear`): its input is quantized with the calibrated **per-tensor uint8 asymmetric**
scale / zero-point (fixed ahead of time: no per-batch range search at run time, unlike
`dynamic_int8`), its weight is **int8 symmetric per output channel**, the integer product is
accumulated exactly (float64 holds every int32 sum of u8 x s8 products for in_features <= 2^20)
and dequantized, plus the fp32 bias. Linears not named by `targets` stay fp32.

This is the PyTorch reference; our runtime's static-scale kernels take the same scales. An input
smoothing left by an earlier `smoothquant` recipe (a per-channel 1/s forward pre-hook) is folded
into the layer: the input is divided per channel before the per-tensor quantization.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from workbench.config import ConfigError, fail, fail_if_set
from workbench.models.edits import record_edit, register_edit
from workbench.quantize.observers import (Observer, make_observer, quantize_affine, quantize_weight,
                                          weight_scales)
from workbench.recipes.base import Recipe, register_recipe
from workbench.recipes.prune.common import training_batches
from workbench.recipes.quantize.dynamic import zero_width_linears
from workbench.recipes.quantize.smoothquant import (InputSmoothing, check_calibration_fields, pop_smoothing,
                                                   run_with_pre_hooks)
from workbench.targets import resolve_targets


class Int8Linear(nn.Module):
    """A Linear with a static uint8 input grid and int8 per-channel weights (exact integer math).

    `y = (sum_k (q_x[k] - zp) * q_w[c, k]) * (s_x * s_w[c]) + bias[c]`, with
    `q_x = clamp(round(x * smooth / s_x) + zp, 0, 255)`.

    Shared by `static_int8` and `qat`; both save it with their stage: each layer is a recorded
    structural edit `int8_linear` (see below), so a stage reloads in a fresh process and a stage
    with a pinned seed is reused across `--seeds` from the stage cache.
    """

    def __init__(self, linear: nn.Linear, input_scale: float, input_zero_point: int,
                 smooth: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scales = weight_scales(linear.weight)
        self.register_buffer("weight_int8", quantize_weight(linear.weight, scales))
        self.register_buffer("weight_scale", scales)
        bias = linear.bias.detach().float().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self.input_scale = float(input_scale)
        self.input_zero_point = int(input_zero_point)
        self.register_buffer("smooth", None if smooth is None else smooth.detach().float().clone())

    @property
    def weight(self) -> torch.Tensor:
        """The fp32 weight this layer stands for (int8 grid values, any input smoothing folded
        back in), for readers of plain Linears: the runtime compiler re-quantizes it per channel
        to the same int8 grid (for an unsmoothed layer)."""
        w = self.weight_int8.float() * self.weight_scale[:, None]
        return w * self.smooth[None, :] if self.smooth is not None else w

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"input_scale={self.input_scale:.3g}, input_zero_point={self.input_zero_point}, "
                f"smoothed={self.smooth is not None}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x * self.smooth
        q = quantize_affine(x.float(), self.input_scale, self.input_zero_point) - self.input_zero_point
        acc = q.double() @ self.weight_int8.double().t()  # exact: |sum| < 2^53
        y = acc * (self.input_scale * self.weight_scale.double())
        if self.bias is not None:
            y = y + self.bias.double()
        return y.to(x.dtype)


def int8_as_fp32(model: nn.Module) -> nn.Module:
    """A copy of `model` with each `Int8Linear` back as a plain Linear holding its weight on the
    int8 grid (`Int8Linear.weight`): what readers of fp32 models (the runtime compiler, which
    re-quantizes per channel to the same grid) can take."""
    model = copy.deepcopy(model)
    for name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, Int8Linear)]:
        linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(layer.weight)
            if layer.bias is not None:
                linear.bias.copy_(layer.bias)
        _set_module(model, name, linear)
    if "workbench_engine" in vars(model):
        del model.workbench_engine
    model.config.workbench_edits = [e for e in getattr(model.config, "workbench_edits", None) or []
                                    if e.get("op") != "int8_linear"]
    return model


@register_edit("int8_linear")
def int8_linear_edit(model: nn.Module, name: str, input_scale: float, input_zero_point: int,
                     smoothed: bool = False) -> None:
    """The structural edit that makes a saved stage's Linear `name` an `Int8Linear` with this
    input grid (a trained stage, e.g. `qat`, cannot be rebuilt from its recipe, so it is saved:
    `load_edited_model` replays the edit on fresh weights, then loads the int8 buffers). The
    model reports the engine `torch-int8`."""
    linear = model.get_submodule(name)
    if not isinstance(linear, nn.Linear):
        raise ConfigError(f"edit int8_linear: '{name}' is a {type(linear).__name__}, not a Linear")
    # a smoothed layer's per-channel input factors are a buffer: ones here, the saved values on load
    smooth = torch.ones(linear.in_features) if smoothed else None
    _set_module(model, name, Int8Linear(linear, input_scale, input_zero_point, smooth))
    model.workbench_engine = "torch-int8"


@dataclass
class StaticInt8Config:
    observer: Literal["minmax", "percentile", "mse"] = "minmax"
    """How the calibrated activation range is chosen."""
    percentile: float = 99.99
    """For `observer: percentile`: clip to this percentile (and 100 minus it), in (50, 100]."""
    num_examples: int = 256
    """Training examples in the calibration pass."""
    batch_size: int = 32
    targets: list[str] | None = None
    """Linear layers to quantize: exact names or `re:<pattern>` (None: every Linear); the
    others stay fp32."""

    def validate(self, where: str) -> None:
        if not 50 < self.percentile <= 100:
            fail(where, "percentile", f"must be in (50, 100], got {self.percentile!r} (e.g. 99.99)")
        if self.observer != "percentile":
            fail_if_set(self, where, ("percentile",), f"observer '{self.observer}' does not read it")
        check_calibration_fields(self, where)


def chosen_linears(model: nn.Module, targets: list[str] | None, where: str) -> dict[str, nn.Linear]:
    """The Linears named by `targets` (None: every Linear), less the zero-width ones."""
    if targets is None:
        found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    else:
        found = resolve_targets(model, targets, where)
    empty = set(zero_width_linears(model))
    return {n: m for n, m in found.items() if n not in empty}


@torch.no_grad()
def calibrate(model: nn.Module, linears: dict[str, nn.Module], batches: list[dict[str, Any]],
              observer: str, percentile: float = 99.99) -> dict[str, Observer]:
    """Run `batches` through `model`, feeding each Linear's input to a fresh observer. Hooks
    registered earlier (a smoothing) run first, so the observers see what the layer multiplies."""
    observers = {name: make_observer(observer, percentile) for name in linears}
    run_with_pre_hooks(model, {name: (lambda _m, args, obs=observers[name]: obs.observe(args[0]))
                               for name in linears}, batches)
    return observers


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def quantize_static_int8(model: nn.Module, linears: dict[str, nn.Linear], observers: dict[str, Observer]) -> nn.Module:
    """Replace each calibrated Linear of `model` (in place) by an `Int8Linear`, each a recorded
    edit `int8_linear` (so the stage saves and reloads), folding in an input smoothing left on it."""
    for name, linear in linears.items():
        smoothing: InputSmoothing | None = pop_smoothing(linear)
        scale, zp = observers[name].qparams()
        record_edit(model, "int8_linear", name=name, input_scale=scale, input_zero_point=zp,
                    smoothed=smoothing is not None)
        if smoothing is not None:
            model.get_submodule(name).smooth.copy_(smoothing.inv_scale)
    return model


@register_recipe("static_int8")
class StaticInt8(Recipe):
    """Calibrate activation ranges on training examples, then quantize Linears to static int8."""

    Config = StaticInt8Config
    inference_only = True  # its result cannot train: no training in its stage
    frozen_result = True  # (nor in a stage built on it)

    def apply(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        chosen_linears(model, cfg.targets, self.where)  # a bad target fails before any work
        model = copy.deepcopy(model)  # the earlier stage keeps its fp32 model
        linears = chosen_linears(model, cfg.targets, self.where)
        batches = training_batches(self.ctx, cfg.num_examples, cfg.batch_size, self.where)
        observers = calibrate(model, linears, batches, cfg.observer, cfg.percentile)
        return quantize_static_int8(model, linears, observers)
