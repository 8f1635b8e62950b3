"""`workbench_runtime`: compile the stage's model onto our kernels (one-shot).

    - name: workbench_runtime
      quantize: true          # int8 weights + dynamic per-token int8 activations
      kernel_choice: measure  # per Linear: time dense / block-sparse / library (oneDNN) at choice_shape, keep the fastest
      choice_shape: [1, 128]  # (batch, seq) the kernels are timed at
      choice_batches: [8]     # optional: also time at batch 8; layers switch kernel by row count
      sparse_threshold: 0.5   # kernel_choice: threshold -- >= 50% zero 1x4 blocks -> block-sparse
      dynamic: true           # a model with `model.dynamic` (token dropping / early exits) runs it
      attention: fp32         # or bf16 (AVX512-BF16) / int8 (AVX-512 VNNI): faster attention, rounded operands
      act_bits: 8             # or 7: per-token activations on [0, 127] (faster int8 GEMM on AVX2)
      int8_weights: auto      # or per_channel / pair_bounded (auto: pair_bounded where AVX2 runs the int8 kernels)

The stage's model becomes an `EngineModule` (inference only: put this recipe in the last stage,
or in a stage without `train:`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from workbench.config import fail
from workbench.recipes.base import Recipe, register_recipe
from workbench.runtime.compiler import compile_model
from workbench.runtime.module import EngineModule


@dataclass
class WorkbenchRuntimeConfig:
    quantize: bool = True
    """int8 weights (per output channel) with dynamic per-token activation quantization."""
    sparse_threshold: float = 0.5
    """With `kernel_choice: threshold`: a Linear whose fraction of all-zero 1x4 blocks is >= this
    runs on the sparse kernel (values > 1 disable the sparse kernels)."""
    kernel_choice: Literal["measure", "dense", "sparse", "threshold", "library"] = "measure"
    """Kernel per Linear (`workbench.runtime.choice`): `measure` times the candidates at
    `choice_shape` in this process and keeps the fastest; `dense` / `sparse` / `threshold` /
    `library` (every int8 Linear on torch's `_int_mm`, oneDNN) are deterministic. All int8
    choices give the same outputs."""
    choice_shape: list[int] = field(default_factory=lambda: [1, 128])
    """(batch, seq) at which `measure` times the kernels: the shape the model will serve."""
    choice_batches: list[int] = field(default_factory=list)
    """More batch sizes (same seq) for `measure` to time: a Linear whose fastest kernel changes
    with the batch keeps one kernel per range of row counts."""
    dynamic: bool = True
    """Keep the model's `DynamicSpec` (`model.dynamic`, exit heads): the engine then drops tokens
    and exits early as the spec says (`workbench.runtime.dynamic`); false runs the static network."""
    attention: Literal["fp32", "bf16", "int8"] = "fp32"
    """`bf16`: attention's q, k, v and probabilities rounded to bf16, sums in fp32, on CPUs with
    AVX512-BF16 or AMX-BF16; `int8`: on int8 grids with int32 sums, on CPUs with AVX-512 VNNI
    (`compile_model`'s `attention`); elsewhere fp32, and the engine says so."""
    act_bits: Literal[7, 8] = 8
    """int8 activations per token on [0, 255] (8) or [0, 127] (7: exact integer products, and on
    AVX2 the faster vpmaddubsw kernel; README "7-bit activations" has its measured accuracy)."""
    int8_weights: Literal["auto", "per_channel", "pair_bounded"] = "auto"
    """Symmetric int8 weights per output channel (`per_channel`), or with every k-pair kept within
    |w[2j]| + |w[2j+1]| <= 128 (`pair_bounded`: on AVX2 without VNNI the exact vpmaddubsw kernel
    then runs 8-bit activations; README "Pair-bounded weights"); `auto` picks `pair_bounded`
    where the int8 kernels run on AVX2 with 8-bit activations."""

    def validate(self, where: str) -> None:
        if self.sparse_threshold < 0:
            fail(where, "sparse_threshold", f"must be >= 0, got {self.sparse_threshold}")
        if len(self.choice_shape) != 2 or any(int(v) < 1 for v in self.choice_shape):
            fail(where, "choice_shape", f"must be [batch, seq] with both >= 1, got {self.choice_shape!r}")
        if any(int(v) < 1 for v in self.choice_batches):
            fail(where, "choice_batches", f"must be batch sizes >= 1, got {self.choice_batches!r}")
        if self.act_bits == 7 and not self.quantize:
            fail(where, "act_bits", "7 needs quantize: true (int8 activations)")


@register_recipe("workbench_runtime")
class WorkbenchRuntime(Recipe):
    """Compile the model with `workbench.runtime.compile_model` and wrap it as an nn.Module."""

    Config = WorkbenchRuntimeConfig
    uses_architecture = True
    inference_only = True  # its result cannot train: no training in its stage
    frozen_result = True  # (nor in a stage built on it)
    logits_only_result = True  # no hidden states, attentions or layers to distil from

    def apply(self, model: nn.Module, ctx: Any = None) -> nn.Module:
        if isinstance(model, EngineModule):
            return model
        engine = compile_model(model, quantize=self.config.quantize,
                               sparse_threshold=self.config.sparse_threshold,
                               kernel_choice=self.config.kernel_choice,
                               choice_shape=tuple(int(v) for v in self.config.choice_shape),
                               choice_batches=tuple(int(v) for v in self.config.choice_batches),
                               attention=self.config.attention, act_bits=int(self.config.act_bits),
                               int8_weights=self.config.int8_weights)
        if not self.config.dynamic:  # the exit heads stay compiled, never called
            engine.meta.pop("dynamic", None)
        return EngineModule(engine, config=getattr(model, "config", None))
