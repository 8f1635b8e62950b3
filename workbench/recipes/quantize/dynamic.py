"""`dynamic_int8`: PyTorch's post-training dynamic int8 quantization of Linear layers.

Weights are quantized to int8 ahead of time; activations are quantized per batch at run time
(torch.ao's `quantize_dynamic`). The `engine` picks PyTorch's quantized backend (x86/fbgemm or
onednn). For our own kernels use the `workbench_runtime` recipe instead.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from workbench.recipes.base import Recipe, register_recipe
from workbench.targets import resolve_targets, validate_target_syntax


def zero_width_linears(model: nn.Module) -> list[str]:
    """Names of the Linear layers with no inputs or no outputs (a block removed by structural
    pruning)."""
    return sorted(n for n, m in model.named_modules()
                  if isinstance(m, nn.Linear) and (m.in_features == 0 or m.out_features == 0))


def quantize_dynamic_int8(model: nn.Module, engine: str = "x86", modules: set[str] | None = None) -> nn.Module:
    """A dynamically quantized copy of `model`: every Linear layer in int8, or only the Linear
    layers named in `modules`. Zero-width Linears stay fp32: torch's quantized Linear with 0
    inputs does not return its bias (logit errors ~1 on a layer whose FFN was removed)."""
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(f"quantized engine '{engine}' is not available in this torch build "
                         f"(available: {torch.backends.quantized.supported_engines})")
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices: the API still ships in 2.13
        empty = set(zero_width_linears(model))
        if empty:
            names = modules if modules is not None else {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
            modules = set(names) - empty
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(),
                                                      set(modules) if modules is not None else {nn.Linear},
                                                      dtype=torch.qint8)


@dataclass
class DynamicInt8Config:
    engine: Literal["x86", "fbgemm", "onednn"] = "x86"
    targets: list[str] | None = None
    """Linear layers to quantize: exact module names or `re:<pattern>` (None: every Linear)."""

    def validate(self, where: str) -> None:
        if self.targets is not None:
            validate_target_syntax(self.targets, where)


@register_recipe("dynamic_int8")
class DynamicInt8(Recipe):
    """Quantize every Linear layer to int8 with dynamic activation quantization."""

    Config = DynamicInt8Config
    inference_only = True  # its result cannot train: no training in its stage
    frozen_result = True  # (nor in a stage built on it)

    def apply(self, model: nn.Module) -> nn.Module:
        chosen = None
        if self.config.targets is not None:
            chosen = set(resolve_targets(model, self.config.targets, self.where))
        return quantize_dynamic_int8(model, self.config.engine, chosen)
