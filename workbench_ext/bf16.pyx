"""bf16 dense linear layer: ``Bf16Linear(w float32[N, K], bias float32[N] | None)``.

``layer(x)`` with ``x: float32[M, K]`` rounds x and the weights to bf16 (round to nearest, ties
to even; fp32 denormals to signed zero; NaN stays NaN -- VCVTNE2PS2BF16's rule, see
:func:`to_bf16`), multiplies them exactly in fp32 and accumulates in fp32 (``vdpbf16ps``), then
adds the fp32 bias. Error vs the fp32 layer: about 2**-8 relative per product (the inputs'
rounding), i.e. ~sqrt(K) * 2**-9 * |x| |w| typical.

ISA paths: ``avx512_bf16`` (AVX512-BF16 ``vdpbf16ps`` 8x32 micro-kernel; also used on AMX
CPUs, which all have it -- there is no AMX-bf16 kernel) and ``portable`` (scalar, the reference,
slow). :func:`has_avx512_bf16` says whether this CPU (and OS) can run the fast path; the engine
uses this layer only then and fp32 BLAS otherwise.
"""

include "_pool_bind.pxi"
import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint16_t

from workbench_ext._validate cimport check_array, check_threads, check_weight
from workbench_ext.int8 cimport aligned_zeros
from workbench_ext import cpu as _cpu

cnp.import_array()

cdef extern from "wb_bf16.h" nogil:
    int wb_threads(int nt)
    int wb_cpu_has_avx512_bf16()
    uint16_t wb_bf16_rne(float f)
    void wb_bf16_convert_rows(const float *x, int M, int K, int Kp2, uint16_t *out, int avx512, int nt)
    void wb_bf16_pack(const float *w, int N, int K, uint16_t *out)
    void wb_bf16_dense_portable(const uint16_t *xb, int M, int Kp2, const uint16_t *wp, int N, const float *bias, float *y, int nt)
    void wb_bf16_dense_avx512(const uint16_t *xb, int M, int Kp2, const uint16_t *wp, int N, const float *bias, float *y, int nt)

ISAS = ("avx512_bf16", "portable")


def has_avx512_bf16():
    """AVX512-BF16 present and AVX-512 state enabled by the OS (with AVX512F/BW/VL/DQ)."""
    f = _cpu.features()
    return bool(wb_cpu_has_avx512_bf16()) and all(f[k] for k in ("avx512f", "avx512bw", "avx512vl", "avx512dq"))


def available_isas():
    return ISAS if has_avx512_bf16() else ("portable",)


cdef inline void* _ptr(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


def to_bf16(x, isa=None):
    """bf16 bits (uint16, same shape) of float32 ``x`` with the kernels' conversion."""
    check_array(x, "x", np.float32, -1)
    cdef int avx = _pick(isa) == "avx512_bf16"
    flat = x.reshape(1, -1)
    out = np.empty(x.shape, np.uint16)
    cdef int n = flat.shape[1]
    cdef const float *px = <const float*>_ptr(flat)
    cdef uint16_t *po = <uint16_t*>_ptr(out)
    with nogil:
        wb_bf16_convert_rows(px, 1, n, n, po, avx, 1)
    return out


def _pick(isa):
    if isa is None:
        return "avx512_bf16" if has_avx512_bf16() else "portable"
    name = str(isa).strip().lower()
    if name not in ISAS:
        raise ValueError(f"unknown bf16 ISA {isa!r}; known: {list(ISAS)}")
    if name == "avx512_bf16" and not has_avx512_bf16():
        raise ValueError("ISA 'avx512_bf16' is not available on this CPU")
    return name


cdef class Bf16Linear:
    """y = bf16(x) @ bf16(w).T + bias, fp32 accumulation (see the module docstring)."""
    cdef readonly int N, K, Kp2
    cdef readonly str isa
    cdef object _wp, _bias

    def __init__(self, w, bias=None, isa=None):
        N, K = check_weight(w, "w", np.float32, bias)
        self.N, self.K, self.Kp2 = N, K, (K + 1) // 2 * 2
        self.isa = _pick(isa)
        self._wp = aligned_zeros(((N + 31) // 32 * 2, self.Kp2 * 16), np.uint16)
        cdef const float *pw = <const float*>_ptr(w)
        cdef uint16_t *pp = <uint16_t*>_ptr(self._wp)
        cdef int n_ = N, k_ = K
        with nogil:
            wb_bf16_pack(pw, n_, k_, pp)
        self._bias = np.zeros(N, np.float32) if bias is None else bias.copy()

    def __repr__(self):
        return f"Bf16Linear(N={self.N}, K={self.K}, isa={self.isa!r})"

    def __call__(self, x, num_threads=None):
        check_array(x, "x", np.float32, 2)
        if x.shape[1] != self.K:
            raise ValueError(f"x must have shape (M, {self.K}), got {tuple(x.shape)}")
        cdef int nt = wb_threads(check_threads(num_threads))
        cdef int M = x.shape[0], K = self.K, Kp2 = self.Kp2, N = self.N
        cdef long cap
        if num_threads is None:  # one thread per ~256K multiply-adds at most
            cap = max(1, <long>M * N * K // 262144)
            nt = <int>min(nt, cap)
        y = np.empty((M, N), np.float32)
        if M == 0:
            return y
        xb = np.empty((M, Kp2), np.uint16)
        cdef int avx = self.isa == "avx512_bf16"
        cdef const float *px = <const float*>_ptr(x)
        cdef uint16_t *pb = <uint16_t*>_ptr(xb)
        cdef const uint16_t *pw = <const uint16_t*>_ptr(self._wp)
        cdef const float *pbias = <const float*>_ptr(self._bias)
        cdef float *py = <float*>_ptr(y)
        with nogil:
            wb_bf16_convert_rows(px, M, K, Kp2, pb, avx, nt)
            if avx:
                wb_bf16_dense_avx512(pb, M, Kp2, pw, N, pbias, py, nt)
            else:
                wb_bf16_dense_portable(pb, M, Kp2, pw, N, pbias, py, nt)
        return y
