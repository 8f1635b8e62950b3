"""Static-scale int8 Linears for the runtime: calibrated `static_int8` / `qat` layers on our kernels.

`static_int8` (workbench/recipes/quantize/static.py) and a converted `qat` stage leave
`Int8Linear` modules holding int8 per-channel weights (`weight_int8`, `weight_scale`), the fp32
bias, an optional per-channel input smoothing and the calibrated per-tensor u8 input grid
(`input_scale`, `input_zero_point`). `compile_model` keeps all of it (`compile_static`): the
*same* int8 weights (never re-quantized) and the *same* grid; the kernels' `static(x, scale,
zero_point)` entry then quantizes every token with that grid (no per-token range search) and
runs the exact s32 GEMM, dense or block-sparse (whichever `workbench.runtime.choice` picks: both
give identical outputs). The only difference from the torch reference is the rounding of
x / scale (the kernel multiplies by 1/scale): a code may differ by one step at a tie, never more
(tests/test_runtime_static.py).

Fused Q/K/V: the three layers share one input, so calibration gives them the same grid (and
smoothquant the same smoothing); the engine then runs one [3H, H] kernel. Layers with different
grids (QAT learns one per layer) keep one kernel per grid (`parts` in the engine meta), called
on the same input and concatenated. A group only partly static (a `targets` list naming Q but
not K) runs as fp32 weights on the engine's dynamic path (`as_fp32`), as the other Linears of a
partly quantized model do. Engines with static layers keep fp32 word embeddings: the fp16 copy
an int8 engine otherwise keeps would move codes across the calibrated grid's rounding edges.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.runtime import kernels as K


@dataclass
class StaticWeights:
    """One calibrated int8 layer as read from its module (numpy copies of its buffers)."""

    w_s8: np.ndarray
    w_scale: np.ndarray
    bias: np.ndarray | None
    input_scale: float
    input_zero_point: int
    smooth: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.w_s8.shape)  # type: ignore[return-value]

    def fp32(self) -> np.ndarray:
        """The fp32 weight the layer stands for (what `Int8Linear.weight` returns)."""
        w = self.w_s8.astype(np.float32) * self.w_scale[:, None]
        return w * self.smooth[None, :] if self.smooth is not None else w


def read_static(module: Any) -> StaticWeights | None:
    """The calibrated weights and grid of a `static_int8` / `qat` `Int8Linear`; None for any
    other module (duck-typed on its buffers: the runtime imports no recipe)."""
    if not all(hasattr(module, a) for a in ("weight_int8", "weight_scale", "input_scale", "input_zero_point")):
        return None

    def arr(t: Any) -> np.ndarray | None:
        return None if t is None else np.ascontiguousarray(t.detach().cpu().float().numpy(), dtype=np.float32)

    return StaticWeights(np.ascontiguousarray(module.weight_int8.detach().cpu().numpy(), dtype=np.int8),
                         arr(module.weight_scale), arr(getattr(module, "bias", None)),
                         float(module.input_scale), int(module.input_zero_point),
                         arr(getattr(module, "smooth", None)))


def _parts(value: tuple) -> list[tuple]:
    """A raw linear (w, b, where) or a fused group of them, as a list of (w, b, where)."""
    return list(value) if isinstance(value[0], tuple) else [value]


def is_static(value: tuple) -> bool:
    return all(isinstance(w, StaticWeights) for w, _, _ in _parts(value))


def as_fp32(value: tuple) -> tuple:
    """The raw linear with any static part replaced by its fp32 weight (a partly static group)."""
    parts = [(w.fp32(), w.bias, where) if isinstance(w, StaticWeights) else (w, b, where)
             for w, b, where in _parts(value)]
    return tuple(parts) if isinstance(value[0], tuple) else parts[0]


def compile_static(name: str, value: tuple, q_scale: float, tensors: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """The engine meta entry (without `kind`) of a fully static linear, its tensors written to
    `tensors`: the int8 weights as they are, the per-channel scales and bias with the attention's
    1/sqrt(d) folded into Q's (`q_scale`, fused .qkv only), one `static` part per run of rows
    sharing a grid and smoothing. None when `value` is not fully static."""
    if not is_static(value):
        return None
    parts = _parts(value)
    qkv = name.endswith(".qkv")
    ws, scales, biases, grids = [], [], [], []
    for i, (w, _, _) in enumerate(parts):
        f = np.float32(q_scale) if qkv and i == 0 else np.float32(1.0)
        ws.append(w.w_s8)
        scales.append((w.w_scale * f).astype(np.float32))
        biases.append((w.bias if w.bias is not None else np.zeros(w.shape[0], np.float32)) * f)
        key = (w.input_scale, w.input_zero_point, None if w.smooth is None else w.smooth.tobytes())
        if grids and grids[-1][0] == key:
            grids[-1][1]["rows"] += w.shape[0]
        else:
            grids.append((key, {"rows": int(w.shape[0]), "input_scale": w.input_scale,
                                "input_zero_point": w.input_zero_point, "smooth": w.smooth is not None,
                                "smooth_values": w.smooth}))
    static = []
    for j, (_, g) in enumerate(grids):
        smooth = g.pop("smooth_values")
        if smooth is not None:
            tensors[f"{name}.smooth.{j}"] = np.ascontiguousarray(smooth, dtype=np.float32)
        static.append(g)
    w8 = np.ascontiguousarray(np.concatenate(ws, axis=0), dtype=np.int8)
    tensors[f"{name}.weight"], tensors[f"{name}.scale"] = w8, np.concatenate(scales).astype(np.float32)
    if any(w.bias is not None for w, _, _ in parts) or name.split(".")[-1] in ("out", "ffn2"):
        tensors[f"{name}.bias"] = np.concatenate(biases).astype(np.float32)
    return {"N": int(w8.shape[0]), "K": int(w8.shape[1]),
            "sources": [[where, int(w.shape[0])] for w, _, where in parts],
            "block_sparsity": round(K.block_sparsity(w8), 6), "static": static}


class StaticInt8Linear:
    """y = W_s8 (q(x * smooth) - zp) * (s_x * s_w) + b with a fixed activation grid (s_x, zp),
    on `DenseInt8Linear` or (`sparse=True`) `BlockSparseInt8Linear` (identical outputs)."""

    def __init__(self, w_s8: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None,
                 input_scale: float, input_zero_point: int, smooth: np.ndarray | None = None,
                 sparse: bool = False) -> None:
        K.require_compiled()
        if not _has_static():
            raise K.KernelsMissingError(f"workbench_ext.int8 has no static entry point: rebuild it ({K.BUILD_HINT})")
        from workbench_ext import int8

        self.input_scale = float(input_scale)
        self.input_zero_point = int(input_zero_point)
        self.smooth = None if smooth is None else np.ascontiguousarray(smooth, dtype=np.float32)
        cls = int8.BlockSparseInt8Linear if sparse else int8.DenseInt8Linear
        self.layer = cls(np.ascontiguousarray(w_s8, dtype=np.int8), np.ascontiguousarray(w_scale, dtype=np.float32),
                         None if bias is None else np.ascontiguousarray(bias, dtype=np.float32))
        self.impl = f"workbench_ext.int8.{cls.__name__}.static[{self.layer.isa}]"

    @classmethod
    def from_module(cls, module: Any, sparse: bool = False) -> "StaticInt8Linear":
        """From a `static_int8` / `qat` `Int8Linear` (its buffers and calibrated grid, unchanged)."""
        s = read_static(module)
        if s is None:
            raise TypeError(f"{type(module).__name__} is not a static int8 layer (no weight_int8 / input_scale)")
        return cls(s.w_s8, s.w_scale, s.bias, s.input_scale, s.input_zero_point, s.smooth, sparse)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.smooth is not None:
            x = np.ascontiguousarray(x * self.smooth)
        return self.layer.static(x, self.input_scale, self.input_zero_point)


class _StaticGroup:
    """Fused rows with different grids: one static kernel per grid on the same input."""

    def __init__(self, layers: list[StaticInt8Linear]) -> None:
        self.layers = layers

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([layer(x) for layer in self.layers], axis=1)


def make_static_linear(name: str, lm: dict[str, Any], tensors: dict[str, np.ndarray],
                       bias: np.ndarray | None) -> tuple[Any, str]:
    """The callable for a static engine entry (`lm["static"]` parts) on the kind `lm["kind"]`."""
    sparse = lm["kind"] == "int8_sparse"
    w, scale = tensors[f"{name}.weight"], tensors[f"{name}.scale"]
    layers, row = [], 0
    for j, part in enumerate(lm["static"]):
        sl = slice(row, row + int(part["rows"]))
        row = sl.stop
        layers.append(StaticInt8Linear(w[sl], scale[sl], None if bias is None else bias[sl],
                                       part["input_scale"], part["input_zero_point"],
                                       tensors.get(f"{name}.smooth.{j}"), sparse=sparse))
    if len(layers) == 1:
        return layers[0], layers[0].impl
    return _StaticGroup(layers), f"{len(layers)} grids x {layers[0].impl}"


def _has_static() -> bool:
    try:
        from workbench_ext import int8
    except ImportError:  # pragma: no cover
        return False
    return hasattr(int8.DenseInt8Linear, "static")
