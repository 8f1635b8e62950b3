"""Static-scale int8 Linears for the runtime: a calibrated `static_int8` layer on our kernels.

`static_int8` (workbench/recipes/quantize/static.py) leaves `Int8Linear` modules holding int8
per-channel weights (`weight_int8`, `weight_scale`), the fp32 bias, an optional per-channel input
smoothing and the calibrated per-tensor u8 input grid (`input_scale`, `input_zero_point`).
`StaticInt8Linear.from_module` moves one onto `workbench_ext.int8` with the *same* weights and the
*same* grid: the kernel's `static(x, scale, zero_point)` entry quantizes every token with that
grid (no per-token range search) and runs the exact s32 GEMM. The only difference from the torch
reference is the rounding of x / scale (the kernel multiplies by 1/scale): a code may differ by
one step at a tie, never more (tests/test_runtime_static.py).

This is the kernel entry a static engine is built from; `compile_model` does not yet read
`static_int8` stages (it takes fp32 Linears): see the module's callers.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from workbench.runtime import kernels as K


class StaticInt8Linear:
    """y = W_s8 (q(x) - zp) * (s_x * s_w) + b with a fixed activation grid (s_x, zp)."""

    def __init__(self, w_s8: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None,
                 input_scale: float, input_zero_point: int, smooth: np.ndarray | None = None) -> None:
        K.require_compiled()
        if not _has_static():
            raise K.KernelsMissingError(f"workbench_ext.int8 has no static entry point: rebuild it ({K.BUILD_HINT})")
        from workbench_ext import int8

        self.input_scale = float(input_scale)
        self.input_zero_point = int(input_zero_point)
        self.smooth = None if smooth is None else np.ascontiguousarray(smooth, dtype=np.float32)
        self.layer = int8.DenseInt8Linear(np.ascontiguousarray(w_s8, dtype=np.int8),
                                          np.ascontiguousarray(w_scale, dtype=np.float32),
                                          None if bias is None else np.ascontiguousarray(bias, dtype=np.float32))
        self.impl = f"workbench_ext.int8.DenseInt8Linear.static[{self.layer.isa}]"

    @classmethod
    def from_module(cls, module: Any) -> "StaticInt8Linear":
        """From a `static_int8` / `qat` `Int8Linear` (its buffers and calibrated grid, unchanged)."""
        def arr(t: Any) -> np.ndarray | None:
            return None if t is None else t.detach().cpu().numpy()

        for attr in ("weight_int8", "weight_scale", "input_scale", "input_zero_point"):
            if not hasattr(module, attr):
                raise TypeError(f"{type(module).__name__} is not a static int8 layer (no {attr!r})")
        return cls(arr(module.weight_int8), arr(module.weight_scale).astype(np.float32), arr(module.bias),
                   module.input_scale, module.input_zero_point, arr(getattr(module, "smooth", None)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.smooth is not None:
            x = np.ascontiguousarray(x * self.smooth)
        return self.layer.static(x, self.input_scale, self.input_zero_point)


def _has_static() -> bool:
    try:
        from workbench_ext import int8
    except ImportError:  # pragma: no cover
        return False
    return hasattr(int8.DenseInt8Linear, "static")
