"""Calibration observers for static int8 quantization (pure torch, checkable by hand).

Conventions, chosen to match the runtime's u8 x s8 kernels (README, "the runtime"):

* activations: **uint8, asymmetric, per tensor**: `q = clamp(round(x / scale) + zero_point, 0, 255)`,
  with `scale = (hi - lo) / 255` and `zero_point = round(-lo / scale)` for a range `[lo, hi]`
  widened to contain 0 (so that 0, e.g. padding, is exact). LayerNorm / GELU outputs are far
  from symmetric, so an asymmetric grid wastes fewer levels than a symmetric int8 one.
* weights: **int8, symmetric, per output channel**: `scale_c = max|W_c| / 127`, values in
  [-127, 127] (never -128: u8 x s8 pair sums then cannot saturate int16 on VNNI-less CPUs).

Observers see activation batches one after another and give `(scale, zero_point)`:

* `minmax`: the range of everything seen;
* `percentile`: the `p`-th and `(100 - p)`-th percentiles (outliers are clipped);
* `mse`: the shrunken min-max range `[c * lo, c * hi]` (c on a grid in (0, 1]) whose
  quantize-dequantize error on the seen values is smallest.

Percentile and MSE observers keep a bounded, evenly strided sample of the values (at most
`MAX_SAMPLE` in all) plus the exact min and max, so calibrating a large model stays in memory.
"""
from __future__ import annotations

import torch

QMIN, QMAX = 0, 255
"""uint8 activation grid."""
WMAX = 127
"""int8 weight grid: [-127, 127]."""
MAX_SAMPLE = 1 << 20
"""Values kept per observer for the percentile / MSE searches."""
PER_BATCH_SAMPLE = 1 << 16


def affine_qparams(lo: float, hi: float) -> tuple[float, int]:
    """uint8 asymmetric `(scale, zero_point)` for the range `[lo, hi]` (widened to contain 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0:
        return 1.0, 0  # an all-zero input: any scale is exact
    scale = (hi - lo) / (QMAX - QMIN)
    zero_point = int(min(max(round(-lo / scale), QMIN), QMAX))
    return scale, zero_point


def quantize_affine(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """uint8 codes of `x` (as int32 values in [0, 255])."""
    return torch.clamp(torch.round(x / scale) + zero_point, QMIN, QMAX).to(torch.int32)


def fake_quantize_affine(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """`x` quantized to uint8 and back: what the int8 layer sees."""
    return (quantize_affine(x, scale, zero_point) - zero_point).to(x.dtype) * scale


def weight_scales(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 scales `max|W_c| / 127` (1.0 for an all-zero row)."""
    amax = weight.detach().abs().amax(dim=1).float()
    return torch.where(amax > 0, amax / WMAX, torch.ones_like(amax))


def quantize_weight(weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """int8 weights, one scale per output channel (row)."""
    return torch.clamp(torch.round(weight.detach().float() / scales[:, None]), -WMAX, WMAX).to(torch.int8)


class Observer:
    """Watches activation batches; `qparams()` gives the uint8 per-tensor `(scale, zero_point)`."""

    def __init__(self) -> None:
        self.lo = float("inf")
        self.hi = float("-inf")
        self.count = 0

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach()
        if x.numel() == 0:
            return
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))
        self.count += x.numel()

    def range(self) -> tuple[float, float]:
        if self.count == 0:
            raise RuntimeError("observer saw no values: the calibration pass never reached this layer")
        return self.lo, self.hi

    def qparams(self) -> tuple[float, int]:
        return affine_qparams(*self.range())


class MinMaxObserver(Observer):
    """The full range of every value seen."""


class _SampleObserver(Observer):
    """Keeps an evenly strided sample of the values seen (bounded memory)."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[torch.Tensor] = []
        self.kept = 0

    def observe(self, x: torch.Tensor) -> None:
        super().observe(x)
        if self.kept >= MAX_SAMPLE or x.numel() == 0:
            return
        flat = x.detach().reshape(-1).float()
        step = max(1, -(-flat.numel() // PER_BATCH_SAMPLE))
        part = flat[::step][: MAX_SAMPLE - self.kept].clone()
        self.samples.append(part)
        self.kept += part.numel()

    def sample(self) -> torch.Tensor:
        self.range()  # fails when nothing was seen
        return torch.cat(self.samples)


class PercentileObserver(_SampleObserver):
    """Clips to the `(100 - p)`-th and `p`-th percentiles of the values seen."""

    def __init__(self, percentile: float = 99.99) -> None:
        super().__init__()
        self.percentile = percentile

    def range(self) -> tuple[float, float]:
        lo, hi = super().range()
        values = torch.cat(self.samples).double()
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100], dtype=torch.float64)
        plo, phi = torch.quantile(values, q).tolist()
        return max(plo, lo), min(phi, hi)


class MSEObserver(_SampleObserver):
    """The shrunken min-max range with the smallest quantize-dequantize squared error."""

    def __init__(self, grid: int = 100) -> None:
        super().__init__()
        self.grid = grid

    def range(self) -> tuple[float, float]:
        lo, hi = super().range()
        values = torch.cat(self.samples).double()
        best, best_err = (lo, hi), float("inf")
        for i in range(self.grid, 0, -1):
            c = i / self.grid
            scale, zp = affine_qparams(c * lo, c * hi)
            err = float(((fake_quantize_affine(values, scale, zp) - values) ** 2).mean())
            if err < best_err:
                best, best_err = (c * lo, c * hi), err
        return best


OBSERVERS = ("minmax", "percentile", "mse")


def make_observer(name: str, percentile: float = 99.99) -> Observer:
    """A fresh observer by name (`minmax`, `percentile`, `mse`)."""
    if name == "minmax":
        return MinMaxObserver()
    if name == "percentile":
        return PercentileObserver(percentile)
    if name == "mse":
        return MSEObserver()
    raise ValueError(f"unknown observer '{name}' (known: {', '.join(OBSERVERS)})")
