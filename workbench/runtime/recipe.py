"""`workbench_runtime`: compile the stage's model onto our kernels (one-shot).

    - name: workbench_runtime
      quantize: true          # int8 weights + dynamic per-token int8 activations
      sparse_threshold: 0.5   # layers with >= 50% zero 1x4 blocks use the block-sparse kernel
      dynamic: true           # a model with `model.dynamic` (token dropping / early exits) runs it

The stage's model becomes an `EngineModule` (inference only: put this recipe in the last stage,
or in a stage without `train:`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from workbench.config import fail
from workbench.recipes.base import Recipe, register_recipe
from workbench.runtime.engine import compile_model
from workbench.runtime.module import EngineModule


@dataclass
class WorkbenchRuntimeConfig:
    quantize: bool = True
    """int8 weights (per output channel) with dynamic per-token activation quantization."""
    sparse_threshold: float = 0.5
    """A Linear whose fraction of all-zero 1x4 blocks is >= this runs on the sparse kernel
    (values > 1 disable the sparse kernels)."""
    dynamic: bool = True
    """Keep the model's `DynamicSpec` (`model.dynamic`, exit heads): the engine then drops tokens
    and exits early as the spec says (`workbench.runtime.dynamic`); false runs the static network."""

    def validate(self, where: str) -> None:
        if self.sparse_threshold < 0:
            fail(where, "sparse_threshold", f"must be >= 0, got {self.sparse_threshold}")


@register_recipe("workbench_runtime")
class WorkbenchRuntime(Recipe):
    """Compile the model with `workbench.runtime.compile_model` and wrap it as an nn.Module."""

    Config = WorkbenchRuntimeConfig
    uses_architecture = True
    inference_only = True  # its result cannot train: no training in its stage

    def apply(self, model: nn.Module, ctx: Any = None) -> nn.Module:
        if isinstance(model, EngineModule):
            return model
        engine = compile_model(model, quantize=self.config.quantize,
                               sparse_threshold=self.config.sparse_threshold)
        if not self.config.dynamic:  # the exit heads stay compiled, never called
            engine.meta.pop("dynamic", None)
        return EngineModule(engine, config=getattr(model, "config", None))
