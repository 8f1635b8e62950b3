"""Fused multi-head attention (float32): ``attention(q, k, v, mask_bias)``.

All heads of all batch rows in one parallel call -- QK^T, the additive mask, softmax and
PV per (batch, head) pair -- replacing per-head NumPy matmuls on Python threads.  q, k and v may
be strided views (e.g. slices of a fused QKV projection's output):

* ``q``: float32 [B, nh, R, d] (the head_dim axis contiguous; the 1/sqrt(d) scale already
  folded in), R query rows (R = S, or 1 for a [CLS]-only layer)
* ``k``: float32 [B, nh, d, S] (any strides)
* ``v``: float32 [B, nh, S, d] (the head_dim axis contiguous)
* ``mask_bias``: float32, B * S values ([B, S] or HF's [B, 1, 1, S]) added to the scores
  (0 for tokens, a large negative number for padding), C-contiguous

Returns ``ctx`` float32 [B, R, nh, d] (C-contiguous, i.e. [B*R, nh*d] rows).  See wb_attn.h for
the order of the float operations; the result matches ``softmax(q @ k + mask) @ v`` in float32
to rounding (tests/test_kernels.py).

``precision="bf16"`` rounds q, k, v and the softmax weights to bf16 and sums in fp32
(wb_attn_bf16.h) on CPUs with AVX512-BF16 (VDPBF16PS: twice the fp32 kernel's multiply-adds per
instruction), on AMX tiles where the "amx" path is active and the CPU has AMX-BF16; elsewhere
(or with the ISA forced below AVX-512) the fp32 kernels run. :func:`bf16_path` tells which.

``precision="int8"`` puts q, k, v and the softmax weights on int8 grids with int32 sums
(wb_attn_int8.h) on CPUs with AVX-512 VNNI (VPDPBUSD: four times the fp32 kernel's multiply-adds
per instruction): q per query row, k per key after subtracting the keys' mean (which the softmax
cancels), v per head_dim column, the weights as rint(255 exp(x - max)). Elsewhere the fp32
kernels run; :func:`int8_runs` tells which.
"""

include "_pool_bind.pxi"
import numpy as np
cimport numpy as cnp

from workbench_ext._validate cimport check_array, check_threads
from workbench_ext import cpu as _cpu

cnp.import_array()

cdef long _estride(object a, int axis, str name) except? -1:
    cdef long s = a.strides[axis]
    if s % 4:
        raise ValueError(f"{name}: stride {s} bytes on axis {axis} is not a whole float32")
    return s // 4


cdef object _check_view(object a, str name):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of float32, got {type(a).__name__}")
    if a.dtype != np.float32 or not a.dtype.isnative:
        raise TypeError(f"{name} must have dtype float32, got {a.dtype}")
    if a.ndim != 4:
        raise ValueError(f"{name} must be 4-D, got shape {tuple(a.shape)}")
    if not a.flags.aligned:
        raise ValueError(f"{name} is not aligned to float32")
    return a


PRECISIONS = ("fp32", "bf16", "int8")


def check_precision(precision) -> int:
    """The kernel's code of "fp32", "bf16" or "int8" (wb_attn_t.precision: 0, 1, 2); anything else
    is a ValueError naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"attention precision must be one of {PRECISIONS}, got {precision!r}")
    return PRECISIONS.index(precision)


def bf16_path(isa=None):
    """Where precision="bf16" runs at the active ISA (or the ISA named): "amx" (AMX-BF16 tiles),
    "avx512_bf16" (VDPBF16PS), or None (the fp32 kernels run)."""
    return (None, "avx512_bf16", "amx")[wb_attn_bf16_usable(_cpu.ISA_CODES[isa or _cpu.active_isa()])]


def int8_runs(isa=None) -> bool:
    """Whether precision="int8" runs on int8 operands at the active ISA (or the ISA named): on
    AVX-512 VNNI (and AMX CPUs, which have it); elsewhere the fp32 kernels run."""
    return bool(wb_attn_int8_usable(_cpu.ISA_CODES[isa or _cpu.active_isa()]))


def runs_bf16(isa=None) -> bool:
    """Whether precision="bf16" runs on bf16 operands here (see :func:`bf16_path`), rather than
    falling back to the fp32 kernels."""
    return bf16_path(isa) is not None


def attention(q, k, v, mask_bias, num_threads=None, significance=False, precision="fp32"):
    """softmax(q @ k + mask_bias) @ v for every (batch, head); see the module docstring.

    significance=True (self-attention, R == S) also returns ``sig`` float32 [B, nh, S]: each
    key's probabilities summed over the queries whose mask_bias is 0 (the token-dropping score
    of workbench.runtime.dynamic), as ``(ctx, sig)``."""
    cdef int mode = check_precision(precision)
    _check_view(q, "q")
    _check_view(k, "k")
    _check_view(v, "v")
    B, nh, R, d = q.shape
    if k.shape[0] != B or k.shape[1] != nh or k.shape[2] != d:
        raise ValueError(f"k must have shape ({B}, {nh}, {d}, S) to match q {tuple(q.shape)}, got {tuple(k.shape)}")
    S = k.shape[3]
    if tuple(v.shape) != (B, nh, S, d):
        raise ValueError(f"v must have shape ({B}, {nh}, {S}, {d}), got {tuple(v.shape)}")
    if B < 1 or nh < 1 or R < 1 or S < 1 or d < 1:
        raise ValueError(f"attention needs non-empty q, k, v, got q {tuple(q.shape)} and k {tuple(k.shape)}")
    check_array(mask_bias, "mask_bias", np.float32, -1)
    if mask_bias.size != B * S or mask_bias.shape[0] != B or mask_bias.shape[mask_bias.ndim - 1] != S:
        raise ValueError(f"mask_bias must hold ({B}, {S}) values ([B, S] or [B, 1, 1, S]), got {tuple(mask_bias.shape)}")
    if (d > 1 and (q.strides[3] != 4 or v.strides[3] != 4)):
        raise ValueError("q and v must be contiguous along head_dim (their last axis)")
    cdef int nt = wb_threads(check_threads(num_threads))
    cdef int isa = _cpu.ISA_CODES[_cpu.active_isa()]
    if significance and R != S:
        raise ValueError(f"significance needs self-attention (R == S), got R={R}, S={S}")
    ctx = np.empty((B, R, nh, d), np.float32)
    sig = np.empty((B, nh, S), np.float32) if significance else None
    cdef wb_attn_t a
    a.q = <const float*>cnp.PyArray_DATA(<cnp.ndarray>q)
    a.qb, a.qh, a.qr = _estride(q, 0, "q"), _estride(q, 1, "q"), _estride(q, 2, "q")
    a.k = <const float*>cnp.PyArray_DATA(<cnp.ndarray>k)
    a.kb, a.kh, a.kd, a.ks = _estride(k, 0, "k"), _estride(k, 1, "k"), _estride(k, 2, "k"), _estride(k, 3, "k")
    a.v = <const float*>cnp.PyArray_DATA(<cnp.ndarray>v)
    a.vb, a.vh, a.vs = _estride(v, 0, "v"), _estride(v, 1, "v"), _estride(v, 2, "v")
    a.mask = <const float*>cnp.PyArray_DATA(<cnp.ndarray>mask_bias)
    a.ctx = <float*>cnp.PyArray_DATA(<cnp.ndarray>ctx)
    a.B, a.nh, a.R, a.S, a.d = B, nh, R, S, d
    a.sig = <float*>cnp.PyArray_DATA(<cnp.ndarray>sig) if significance else NULL
    a.precision = mode
    a.seq_off = NULL
    cdef int rc
    with nogil:
        rc = wb_attention(&a, isa, nt)
    if rc != 0:
        raise MemoryError("attention: could not allocate per-thread scratch memory")
    return (ctx, sig) if significance else ctx
