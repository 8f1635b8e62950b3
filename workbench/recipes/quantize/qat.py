"""`qat`: quantization-aware training: fake int8 in the forward pass, a real int8 model at the end.

From the start of its stage's training, each targeted Linear computes with its weight and its
input on the int8 grids `static_int8` uses (`workbench.quantize.observers`): weights **int8
symmetric per output channel** (`max|W_c| / 127`, recomputed every step from the current, masked
weight, so a pruned zero stays zero), inputs **uint8 asymmetric per tensor**. Rounding passes
gradients straight through (STE); an input outside the grid's range gets none (clipped STE).

The input range is an exponential moving average of each training batch's min / max (`ema`)
until `freeze_observers_at` of the stage's optimizer steps, then frozen. With
`learn_scales: true` the frozen scale becomes a trained parameter from then on (LSQ, Esser et
al. 2020: gradient scaled by 1 / sqrt(numel * 255); the zero point stays), owned by the recipe.

At the end of training (`convert: true`) each targeted Linear becomes the `Int8Linear` that
`static_int8` builds (exact integer math) with the frozen input grid, recorded as the structural
edit `int8_linear`, so the stage is saved and reloads as the same int8 model. `convert: false`
keeps the fp32 weights trained under fake quantization (quantize them in a later stage).

Composition: pruning recipes keep their masks (they re-apply them after every optimizer step, on
the very Linear objects: a fake-quantized Linear stays that object, only its class changes to
`FakeQuantLinear`, keeping its name, parameters and state-dict keys), distillation recipes read
the fake-quantized logits. `qat` must be listed last in its stage, so that the other recipes'
end-of-training work (a pruning schedule's final masks) happens on fp32 layers before the
conversion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import ConfigError, fail
from workbench.models.arch import architecture
from workbench.models.edits import record_edit
from workbench.quantize.observers import QMAX, QMIN, WMAX, affine_qparams, weight_scales
from workbench.recipes.base import Recipe, StageCheck, TrainState, register_recipe
from workbench.recipes.quantize.dynamic import zero_width_linears
from workbench.targets import resolve_targets, validate_target_syntax


def fake_quant_weight(weight: torch.Tensor) -> torch.Tensor:
    """`weight` on its int8 symmetric per-channel grid, with a straight-through gradient."""
    scales = weight_scales(weight).to(weight.dtype)[:, None]
    q = torch.clamp(torch.round(weight.detach() / scales), -WMAX, WMAX) * scales
    return weight + (q - weight).detach()


class ActivationFakeQuant:
    """The input grid of one Linear: EMA min / max until frozen, then fixed or learned (LSQ).
    A plain object (not an nn.Module) so that the Linear holding it gains no parameters: a
    learned scale is the recipe's own (`QAT.owned`)."""

    def __init__(self, ema: float) -> None:
        self.ema = ema
        self.lo: float | None = None
        self.hi: float | None = None
        self.frozen = False
        self.zero_point = 0
        self.scale: nn.Parameter | None = None  # set when a learned scale takes over

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = float(x.detach().min()), float(x.detach().max())
        if self.lo is None or self.hi is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo += self.ema * (lo - self.lo)
            self.hi += self.ema * (hi - self.hi)

    def qparams(self) -> tuple[float, int]:
        """The uint8 `(scale, zero_point)` in use now."""
        if self.scale is not None:
            return float(self.scale.detach().clamp_min(1e-8)), self.zero_point
        if self.lo is None or self.hi is None:
            raise RuntimeError("no training batch has reached this layer yet")
        return affine_qparams(self.lo, self.hi)

    def freeze(self, scale: nn.Parameter | None) -> None:
        """Stop observing; with `scale`, learn it from the frozen value on."""
        s, self.zero_point = self.qparams()
        self.frozen = True
        if scale is not None:
            with torch.no_grad():
                scale.fill_(s)
            self.scale = scale

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if training and not self.frozen and x.numel():
            self.observe(x)
        if self.scale is not None:  # LSQ: the scale gets a gradient, scaled for stability
            g = 1.0 / math.sqrt(max(1, x.numel()) * QMAX)
            s = self.scale.clamp_min(1e-8)
            s = s * g + (s - s * g).detach()
            v = torch.clamp(x / s, QMIN - self.zero_point, QMAX - self.zero_point)
            return (v + (torch.round(v) - v).detach()) * s
        scale, zp = self.qparams()
        clipped = torch.clamp(x, (QMIN - zp) * scale, (QMAX - zp) * scale)  # no gradient outside the grid
        q = (torch.clamp(torch.round(x.detach() / scale) + zp, QMIN, QMAX) - zp) * scale
        return clipped + (q - clipped).detach()


class FakeQuantLinear(nn.Linear):
    """A Linear computing on fake-int8 weights and inputs. Never constructed: `qat` sets it as
    the class of an existing Linear (`fake_quantize_`), which keeps the object other recipes
    hold; `restore_linear` sets it back."""

    fake_quant: ActivationFakeQuant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.fake_quant(x, self.training), fake_quant_weight(self.weight), self.bias)


def fake_quantize_(linear: nn.Linear, quantizer: ActivationFakeQuant) -> None:
    linear.__class__ = FakeQuantLinear
    linear.fake_quant = quantizer


def restore_linear(linear: nn.Module) -> None:
    if isinstance(linear, FakeQuantLinear):
        linear.__class__ = nn.Linear
        del linear.fake_quant


@dataclass
class QATConfig:
    targets: list[str] | None = None
    """Linear layers to fake-quantize: exact names or `re:<pattern>` (None: every encoder Linear
    of the model's family, via the architecture adapter; the pooler and classifier stay fp32)."""
    weight: Literal["per_channel"] = "per_channel"
    """Weight grid: int8 symmetric, one scale per output channel (static_int8's and the runtime's)."""
    activation: Literal["per_tensor"] = "per_tensor"
    """Input grid: uint8 asymmetric, one scale / zero point per layer input."""
    ema: float = 0.05
    """Weight of each training batch's min / max in the moving-average input range, in (0, 1]."""
    freeze_observers_at: float = 0.5
    """Fraction of the stage's optimizer steps after which input ranges are frozen, in [0, 1]
    (at least one step observes)."""
    learn_scales: bool = False
    """Train the frozen input scales (LSQ) for the rest of the stage."""
    convert: bool = True
    """End the stage with the real int8 model (`Int8Linear` layers); false: the fp32 weights."""

    def validate(self, where: str) -> None:
        if not 0.0 < self.ema <= 1.0:
            fail(where, "ema", f"must be in (0, 1], got {self.ema!r}")
        if not 0.0 <= self.freeze_observers_at <= 1.0:
            fail(where, "freeze_observers_at", f"must be a fraction of the stage's steps in [0, 1], "
                 f"got {self.freeze_observers_at!r}")
        if self.learn_scales and self.freeze_observers_at >= 1.0:
            fail(where, "learn_scales", "needs steps after the ranges freeze: set freeze_observers_at below 1")
        if self.targets is not None:
            validate_target_syntax(self.targets, where)


@register_recipe("qat")
class QAT(Recipe):
    """Fake int8 (STE) while the stage trains, converted to static int8 at its end."""

    Config = QATConfig
    uses_architecture = True

    @classmethod
    def requires_training(cls, config: QATConfig) -> bool:
        return True

    @classmethod
    def check_stage(cls, config: QATConfig, check: StageCheck) -> None:
        if check.recipes.count("qat") > 1:
            raise ConfigError(f"{check.where}: is listed twice in the stage; keep one")
        if check.recipes[-1] != "qat":
            raise ConfigError(f"{check.where}: list 'qat' last in the stage (after "
                              f"{', '.join(r for r in check.recipes if r != 'qat')}), so the other recipes finish "
                              "their end-of-training work on fp32 layers before the int8 conversion")

    def __init__(self, config: QATConfig, ctx: Any) -> None:
        super().__init__(config, ctx)
        self.quantizers: dict[str, ActivationFakeQuant] = {}
        self.freeze_step = 0

    def chosen(self, model: nn.Module) -> dict[str, nn.Linear]:
        """The targeted Linears, less zero-width ones (a block removed by structural pruning)."""
        if self.config.targets is not None:
            found = resolve_targets(model, self.config.targets, self.where, kind=nn.Linear)
        else:
            found = architecture(model, self.where).encoder_linears()
            bad = [n for n, m in found.items() if not isinstance(m, nn.Linear)]
            if bad:
                raise ConfigError(f"{self.where}: '{bad[0]}' is already quantized ({type(found[bad[0]]).__name__}); "
                                  "quantization-aware training starts from an fp32 stage")
        empty = set(zero_width_linears(model))
        return {n: m for n, m in found.items() if n not in empty}

    def apply(self, model: nn.Module) -> nn.Module:
        self.chosen(model)  # bad targets / a quantized model fail before any training
        return model

    def setup(self, model: nn.Module) -> None:
        """Fake-quantize the targeted Linears (before the optimizer is built and a checkpoint is
        restored); a learned scale per layer is owned by the recipe."""
        linears = self.chosen(model)
        self.quantizers = {name: ActivationFakeQuant(self.config.ema) for name in linears}
        for name, linear in linears.items():
            fake_quantize_(linear, self.quantizers[name])
        if self.config.learn_scales:
            self.owned = nn.ParameterList([nn.Parameter(torch.ones(())) for _ in linears])

    def on_train_begin(self, state: TrainState) -> None:
        self.freeze_step = max(1, math.ceil(self.config.freeze_observers_at * state.total_steps))
        self._maybe_freeze(state.step)

    def on_step_begin(self, state: TrainState) -> None:
        self._maybe_freeze(state.step)

    def _maybe_freeze(self, step: int) -> None:
        if step < self.freeze_step:
            return
        scales = list(self.owned) if self.owned is not None else [None] * len(self.quantizers)
        for q, scale in zip(self.quantizers.values(), scales):
            if not q.frozen and q.lo is not None:
                q.freeze(scale)

    def on_train_end(self, state: TrainState) -> None:
        self._maybe_freeze(self.freeze_step)
        model = state.model
        unseen = [n for n, q in self.quantizers.items() if q.lo is None]
        if unseen:
            raise ConfigError(f"{self.where}: no training batch reached '{unseen[0]}'; leave it out of 'targets'")
        qparams = {name: q.qparams() for name, q in self.quantizers.items()}
        for name in self.quantizers:
            restore_linear(model.get_submodule(name))
        if self.config.convert:
            for name, (scale, zp) in qparams.items():
                record_edit(model, "int8_linear", name=name, input_scale=scale, input_zero_point=zp)
        self.quantizers = {}

    def state_dict(self) -> dict[str, Any]:
        return {"quantizers": {n: {"lo": q.lo, "hi": q.hi, "frozen": q.frozen, "zero_point": q.zero_point}
                               for n, q in self.quantizers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        scales = list(self.owned) if self.owned is not None else [None] * len(self.quantizers)
        for (name, q), scale in zip(self.quantizers.items(), scales):
            saved = state["quantizers"][name]
            q.lo, q.hi, q.zero_point = saved["lo"], saved["hi"], saved["zero_point"]
            q.frozen = saved["frozen"]
            if q.frozen and scale is not None:
                q.scale = scale  # its value comes back with the recipe's owned parameters
