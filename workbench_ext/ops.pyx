"""Fused float32 ops for the runtime: the embedding lookup, GELU (erf), LayerNorm (+ bias +
residual), softmax, per-token and static u8 quantization.  Inputs must be C-contiguous numpy
arrays (float32, except the lookup's fp16 table and int64 ids); all ops are out-of-place and the
elementwise ones act on the last dimension (any leading shape).

On the AVX2 path (also used under avx512_vnni / amx) ``gelu`` uses a vectorised rational erf
approximation (|error| ~1e-7 vs ``torch.erf``), ``softmax`` a vectorised exp (~2 ulp) and
``layernorm`` 8-lane float partial sums; the portable path uses libm ``erff`` / ``expf`` and
double accumulation.  ``quantize_per_token`` is bit-identical to the quantization fused into
:mod:`workbench_ext.int8` (see its docstring for the formula), and both quantizers give the same
bytes on every path (AVX-512 under avx512_vnni / amx, AVX2, portable).
"""

include "_pool_bind.pxi"
import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, int32_t, int64_t

from workbench_ext._validate cimport check_array, check_threads
from workbench_ext import cpu as _cpu

cnp.import_array()

cdef extern from "wb_ops.h" nogil:
    int wb_threads(int nt)
    void wb_gelu(const float *x, float *y, size_t n, int isa, int nt)
    void wb_tanh(const float *x, float *y, size_t n)
    void wb_layernorm(const float *x, const float *bias, const float *res, const float *g, const float *b, float eps, long R, int H, float *y, int isa, int nt)
    void wb_softmax(const float *x, long R, int H, float *y, int isa, int nt)
    void wb_quantize_static(const float *x, size_t n, float scale, int32_t zp, uint8_t *q, int isa, int nt)
    void wb_quantize_rows(const float *x, int M, int K, int Kp, uint8_t *q, float *scale, int32_t *zp, int isa, int nt, int qmax)

cdef extern from "wb_embed.h" nogil:
    void wb_embed_rows(const void *table, int half, const int64_t *ids, long n, int H,
                       const float *add, const int64_t *add_ids, float *y, int f16c, int nt)


cdef inline void* _ptr(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


include "_scan_batch.pxi"


cdef int _isa() except -1:
    return _cpu.ISA_CODES[_cpu.active_isa()]


cdef bint _HAS_F16C = bool(_cpu.features().get("f16c"))


cdef object _check_ids(object ids, str name, Py_ssize_t rows):
    check_array(ids, name, np.int64, -1)
    if ids.size and (ids.min() < 0 or ids.max() >= rows):
        raise IndexError(f"{name} must lie in [0, {rows}), got values from {ids.min()} to {ids.max()}")
    return ids


def embed_rows(table, ids, add=None, add_ids=None, num_threads=None):
    """The embedding lookup ``table[ids] + add[add_ids]`` as float32 [ids.size, H]: `table`
    float32 or float16 [V, H] (fp16 widened exactly, with F16C where the CPU has it), `ids` int64
    (any shape, read in C order); `add` optional float32 [P, H] with `add_ids` int64 of ids' size
    (the position embeddings). The same bits as the NumPy expression."""
    if not isinstance(table, np.ndarray) or table.dtype not in (np.float32, np.float16):
        raise TypeError(f"table must be a float32 or float16 numpy.ndarray, got "
                        f"{getattr(table, 'dtype', type(table).__name__)}")
    check_array(table, "table", table.dtype, 2)
    cdef int H = table.shape[1]
    _check_ids(ids, "ids", table.shape[0])
    cdef long n = ids.size
    cdef const float *padd = NULL
    cdef const int64_t *paid = NULL
    if (add is None) != (add_ids is None):
        raise ValueError("add and add_ids go together: give both or neither")
    if add is not None:
        check_array(add, "add", np.float32, 2)
        if add.shape[1] != H:
            raise ValueError(f"add must have {H} columns to match table {tuple(table.shape)}, got {tuple(add.shape)}")
        _check_ids(add_ids, "add_ids", add.shape[0])
        if add_ids.size != n:
            raise ValueError(f"add_ids must have as many values as ids ({n}), got {add_ids.size}")
        padd = <const float*>_ptr(add)
        paid = <const int64_t*>_ptr(add_ids)
    cdef int nt = wb_threads(check_threads(num_threads))
    cdef int half = table.dtype == np.float16
    cdef int f16c = _HAS_F16C and _isa() >= 1     # the portable path stays portable
    y = np.empty((n, H), np.float32)
    cdef const void *pt = <const void*>_ptr(table)
    cdef const int64_t *pid = <const int64_t*>_ptr(ids)
    cdef float *py = <float*>_ptr(y)
    with nogil:
        wb_embed_rows(pt, half, pid, n, H, padd, paid, py, f16c, nt)
    return y


def scan_batch(ids, mask, tt, long vocab, long types):
    """One pass over a batch's values (the runtime's input check, workbench.runtime.inputs): ids,
    mask and tt int64 [B, S], C-contiguous (mask None: every position a token; tt None: no
    token types). Returns (ok, counts, prefix, last): ok when every id is in [0, vocab), every
    mask value 0 or 1 and every token type in [0, types); counts int64 [B] each row's 1s; prefix
    when every row is its 1s then 0s; last 1 + the last column holding a 1 in any row (0: none).
    Not ok: the caller's NumPy checks say what is wrong. (wb_inputs.h; Int8Encoder.classify_tokens
    runs the same pass.)"""
    return _scan_batch(ids, mask, tt, vocab, types)


def gelu(x, num_threads=None):
    """Erf GELU (as in BERT): 0.5 * x * (1 + erf(x / sqrt(2)))."""
    check_array(x, "x", np.float32, -1)
    cdef int nt = wb_threads(check_threads(num_threads))
    cdef int isa = _isa()
    y = np.empty_like(x)
    cdef size_t n = x.size
    cdef const float *px = <const float*>_ptr(x)
    cdef float *py = <float*>_ptr(y)
    with nogil:
        wb_gelu(px, py, n, isa, nt)
    return y


def tanh(x):
    """tanh value by value (libm tanhf; the classifier heads' pooler: the compiled encoder's head
    calls the same C function)."""
    check_array(x, "x", np.float32, -1)
    y = np.empty_like(x)
    cdef size_t n = x.size
    cdef const float *px = <const float*>_ptr(x)
    cdef float *py = <float*>_ptr(y)
    with nogil:
        wb_tanh(px, py, n)
    return y


cdef object _check_vec(object v, str name, int H):
    check_array(v, name, np.float32, 1)
    if v.shape[0] != H:
        raise ValueError(f"{name} must have shape ({H},) to match the last dim of x, got {tuple(v.shape)}")
    return v


def layernorm(x, gamma, beta, eps=1e-12, num_threads=None):
    """LayerNorm over the last dim: (x - mean) / sqrt(var + eps) * gamma + beta."""
    return _ln(x, None, None, gamma, beta, eps, num_threads)


def add_bias_residual_layernorm(x, bias, residual, gamma, beta, eps=1e-12, num_threads=None):
    """LayerNorm(x + bias + residual) over the last dim (the BERT post-attention / post-FFN block)."""
    return _ln(x, bias, residual, gamma, beta, eps, num_threads)


cdef object _ln(x, bias, residual, gamma, beta, eps, num_threads):
    check_array(x, "x", np.float32, -1)
    cdef int H = x.shape[x.ndim - 1]
    if H < 1:
        raise ValueError(f"x must have a non-empty last dim, got shape {tuple(x.shape)}")
    _check_vec(gamma, "gamma", H)
    _check_vec(beta, "beta", H)
    cdef const float *pbias = NULL
    cdef const float *pres = NULL
    if bias is not None:
        _check_vec(bias, "bias", H)
        pbias = <const float*>_ptr(bias)
    if residual is not None:
        check_array(residual, "residual", np.float32, -1)
        if residual.shape != x.shape:
            raise ValueError(f"residual must have the shape of x {tuple(x.shape)}, got {tuple(residual.shape)}")
        pres = <const float*>_ptr(residual)
    cdef float feps = float(eps)
    if not feps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    cdef int nt = wb_threads(check_threads(num_threads))
    cdef int isa = _isa()
    y = np.empty_like(x)
    cdef long R = x.size // H
    cdef const float *px = <const float*>_ptr(x)
    cdef const float *pg = <const float*>_ptr(gamma)
    cdef const float *pb = <const float*>_ptr(beta)
    cdef float *py = <float*>_ptr(y)
    with nogil:
        wb_layernorm(px, pbias, pres, pg, pb, feps, R, H, py, isa, nt)
    return y


def softmax(x, num_threads=None):
    """Numerically stable softmax over the last dim."""
    check_array(x, "x", np.float32, -1)
    cdef int H = x.shape[x.ndim - 1]
    cdef int nt = wb_threads(check_threads(num_threads))
    cdef int isa = _isa()
    y = np.empty_like(x)
    if H == 0:
        return y
    cdef long R = x.size // H
    cdef const float *px = <const float*>_ptr(x)
    cdef float *py = <float*>_ptr(y)
    with nogil:
        wb_softmax(px, R, H, py, isa, nt)
    return y


def quantize_per_token(x, num_threads=None, bits=8):
    """Dynamic per-row asymmetric u8 quantization of x float32[M, K] ->
    (q uint8[M, K], scale float32[M], zero_point int32[M]); x ~= (q - zp) * scale.
    ``bits``: 8 (q in [0, 255]) or 7 (q in [0, 127], the int8 layers' ``act_bits=7``)."""
    check_array(x, "x", np.float32, 2)
    if bits not in (7, 8):
        raise ValueError(f"bits must be 7 or 8, got {bits!r}")
    cdef int qmax = 127 if bits == 7 else 255
    cdef int M = x.shape[0], K = x.shape[1]
    cdef int nt = wb_threads(check_threads(num_threads))
    cdef int isa = _isa()
    q = np.empty((M, K), np.uint8)
    s = np.empty(M, np.float32)
    z = np.empty(M, np.int32)
    cdef const float *px = <const float*>_ptr(x)
    cdef uint8_t *pq = <uint8_t*>_ptr(q)
    cdef float *ps = <float*>_ptr(s)
    cdef int32_t *pz = <int32_t*>_ptr(z)
    if M and K:
        with nogil:
            wb_quantize_rows(px, M, K, K, pq, ps, pz, isa, nt, qmax)
    elif M:
        s[:] = 1.0
        z[:] = 0
    return q, s, z


def quantize_static(x, scale, zero_point, num_threads=None):
    """Static per-tensor u8 quantization: clamp(rint(x * (1/scale)) + zero_point, 0, 255)."""
    check_array(x, "x", np.float32, -1)
    cdef float fs = float(scale)
    if not (fs > 0 and fs < float("inf")):
        raise ValueError(f"scale must be a finite positive float, got {scale}")
    zp_int = int(zero_point)
    if zp_int < 0 or zp_int > 255:
        raise ValueError(f"zero_point must be in [0, 255] for uint8, got {zero_point}")
    cdef int32_t zp = zp_int
    cdef int nt = wb_threads(check_threads(num_threads))
    cdef int isa = _isa()
    q = np.empty(x.shape, np.uint8)
    cdef size_t n = x.size
    cdef const float *px = <const float*>_ptr(x)
    cdef uint8_t *pq = <uint8_t*>_ptr(q)
    with nogil:
        wb_quantize_static(px, n, fs, zp, pq, isa, nt)
    return q
