"""Int8 linear layers: y = dequant(quant_u8(x) @ W_s8^T) + bias, dense, 1x4 block-sparse and
16x64 tile-sparse (AMX).

Both layers take a symmetric per-output-channel int8 weight ``w_s8[N, K]`` with float32
scales ``w_scale[N]`` (real weight = w_s8 * w_scale[:, None]) and an optional float32
``bias[N]``.  A call ``layer(x)`` with ``x: float32[M, K]``:

1. quantizes each row (token) of x to u8, asymmetric: ``lo = min(0, min x)``,
   ``hi = max(0, max x)``, ``scale = (hi - lo) / 255`` (all-zero row: 1),
   ``zp = clamp(rint(-lo / scale), 0, 255)``, ``q = clamp(rint(x * (1/scale)) + zp, 0, 255)``
   -- exactly what :func:`workbench_ext.ops.quantize_per_token` returns;
2. computes the exact s32 GEMM ``acc[m, n] = sum_k q[m, k] * w[n, k]``;
3. dequantizes, fused: ``y = (float)(acc - zp[m] * wsum[n]) * (scale[m] * w_scale[n]) + bias[n]``
   where ``wsum[n] = sum_k w[n, k]`` is precomputed at pack time (weight-side zero-point
   compensation), so ``acc - zp * wsum == sum_k (q - zp) * w`` exactly.

All ISA paths produce the same int32 values and use the same float epilogue, so outputs are
bit-identical across ``amx`` / ``avx512_vnni`` / ``avx2`` / ``portable``.
Exactness limit: K <= 65535 (|sum (q - zp) * w| < 2**31).

ISA paths (chosen per call from :func:`workbench_ext.cpu.active_isa`, or fixed with the
constructor's ``isa=``; weights are (re)packed lazily for the path in use):

* ``portable``: plain C (auto-vectorised by the compiler).
* ``avx2``: activations centred (``q - zp``) and widened to s16, weights packed s16 in 16-column
  panels; a 4x16 micro-kernel (assembly) in the pair-product form of Winograd (1968):
  ``sum_i (x[2i] + w[2i+1]) (x[2i+1] + w[2i]) = x.w + xi(x) + eta(w)``, so one ``vpmaddwd``
  covers 32 multiply-adds, and subtracting the per-row ``xi`` and per-column ``eta`` (pack time)
  leaves the exact integer result -- no ``vpmaddubsw`` s16 saturation.  Measured on AMD EPYC
  Zen 2 (vpmaddwd issues once per cycle there): ~17 multiply-adds/cycle against ~14.5 for the
  plain ``vpmaddwd`` kernel it replaced (same run: 1.2x at 128x768x3072, 1 thread).  Tiles
  are handed out dynamically, so a thread that the shared machine slows down takes fewer.
  Sparse: vectorised over 16 tokens (int16 activations) or, for K > 1024, 32 tokens (u8
  activations widened at load).
* ``avx512_vnni``: ``vpdpbusd`` 8x32 micro-kernel on u8 x s8 (16 zmm accumulators).  Sparse:
  tiles of up to 64 rows, activations packed with 16x16 register transposes, a 16x16 epilogue
  (same bits as the AVX2 epilogue) that stores each transposed row piece straight to the output
  when every output row starts a cache line, else writes each output row in one sweep.
* ``amx``: ``TDPBUSD`` on 16x64 u8 activation tiles and 16x64 VNNI-packed s8 weight tiles,
  2x2 tiles = 32x32 outputs per step; each step's epilogue runs a few rows at a time between the
  next step's tile multiplies (``_set_amx_pipelined(0)``: after them, for the A/B).  The 1x4
  block-sparse layer has no AMX kernel (tiles cannot skip 1x4 blocks); under ``amx`` it runs the
  ``avx512_vnni`` sparse kernel.  ``TileSparseInt8Linear`` is the AMX sparse layout: it keeps
  only the 16x64 weight blocks (one B tile each) that hold a non-zero and skips the rest
  (wb_tile_sparse.h); on other ISAs it runs their dense kernel.

Executed on the development machines: ``portable``, ``avx2`` (AMD EPYC Zen 2 and Zen 3) and
``avx512_vnni`` (AMD EPYC Zen 5); the AMX code compiles into every build, runs its real-hardware
tests only on CPUs that have it, and is checked everywhere against a scalar emulation of its
intrinsics (testing/emulate_isa.c).

Outputs (``__call__`` without ``out=``) start on a 64-byte boundary: with row widths that are
multiples of 16 every row starts a cache line, so the kernels' 64-byte stores write whole lines.
``activation="gelu"`` applies GELU to each output tile in the epilogue (bit-identical to
``ops.gelu`` on the unfused output).

Threads: ``layer(x, num_threads=n)`` uses exactly n threads of the kernels' pool (workbench_ext.pool); by default
omp_get_max_threads() (OMP_NUM_THREADS / cpu.set_num_threads), capped at one thread per ~256K
multiply-adds.  Parallel over (column panel, row tile) work items.

Block-sparse packed format (1x4 blocks along K, as in "Fast DistilBERT on CPUs",
Shen et al. 2022): K is zero-padded to ``Kb * 4`` (``Kb = ceil(K / 4)``) and split into blocks
``w[n, 4*b : 4*b + 4]``; a block is stored iff any of its 4 weights is non-zero.  CSR by output
row: ``row_ptr: int32[N + 1]`` (blocks of row n are ``row_ptr[n]:row_ptr[n+1]``),
``col_idx: int32[nnz_blocks]`` (block index b, i.e. k = 4*b, ascending within a row),
``values: int8[nnz_blocks, 4]``.  The AVX2 path keeps ``values`` widened to int16.  Rows with no
block are fine (output = bias).  Activations are repacked per call into 16-row tiles
``[M/16][Kb][16][4]`` so one block multiplies 16 tokens at once (vectorised over tokens).
"""

include "_pool_bind.pxi"
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int8_t, uint8_t, int16_t, int32_t
from libc.string cimport memset

from workbench_ext._validate cimport check_array, check_threads, check_weight
from workbench_ext import cpu as _cpu

cnp.import_array()

cdef extern from "wb_int8.h" nogil:
    int wb_sparse_pair_cols
    int wb_amx_pipelined
    int wb_sparse_epi_direct
    int wb_threads(int nt)
    void wb_quantize_rows(const float *x, int M, int K, int Kp, uint8_t *q, float *scale, int32_t *zp, int isa, int nt)
    void wb_quantize_rows_static(const float *x, int M, int K, int Kp, float scale, int32_t zp, uint8_t *q, int isa, int nt)
    void wb_pack_dense_portable(const int8_t *w, int N, int K, int Kp, int8_t *out)
    void wb_pack_dense_avx2(const int8_t *w, int N, int K, int Kp, int16_t *out, int32_t *eta)
    void wb_pack_dense_vnni(const int8_t *w, int N, int K, int Kp, int8_t *out)
    void wb_widen_pairs_avx2(const uint8_t *q, int M, int Kp, const int32_t *zp, int16_t *out, int32_t *xi)
    void wb_dense_portable(const uint8_t *xq, int M, int Kp, const int8_t *w, int N, const wb_epi_t *e, int nt)
    void wb_dense_avx2(const int16_t *xs, const int32_t *xi, int M, int Kp, const int16_t *Bp, const int32_t *eta, int N, const wb_epi_t *e, int nt, long a_block_bytes)
    void wb_dense_vnni(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N, const wb_epi_t *e, int nt)
    void wb_dense_amx(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N, const wb_epi_t *e, int nt)
    void wb_sparse_portable(const uint8_t *xq, int M, int Kp, const int32_t *rp, const int32_t *col, const int8_t *vals, int N, const wb_epi_t *e, int nt)
    void wb_pack_x_sparse_u8(const uint8_t *xq, int M, int Kp, int Kb, uint8_t *out, int nt)
    void wb_sparse_avx2(const int16_t *xt, int M, int Kb, const int32_t *rpc, int nch, const int32_t *col, const int16_t *vals16, int N, const wb_epi_t *e, int nt)
    void wb_pack_x_sparse_s16_avx2(const uint8_t *xq, int M, int Kp, int Kb, int16_t *out, int nt)
    void wb_pack_x_sparse_u8_32(const uint8_t *xq, int M, int Kp, int Kb, uint8_t *out, int nt)
    void wb_sparse_avx2_32(const uint8_t *xt, int M, int Kb, const int32_t *rp, const int32_t *col, const int16_t *vals16, int N, const wb_epi_t *e, int nt)
    void wb_sparse_vnni(const uint8_t *xt, int M, int Kb, const int32_t *rp, const int32_t *col, const int8_t *vals, int N, const wb_epi_t *e, int nt)
    int wb_sparse_vnni_groups(int M)
    void wb_pack_x_sparse_u8_g(const uint8_t *xq, int M, int Kp, int Kb, int G, uint8_t *out, int nt)
    void wb_pack_x_sparse_vnni "WB_PACK_X_SPARSE_VNNI"(const uint8_t *xq, int M, int Kp, int Kb, int G, uint8_t *out, int nt)
    void wb_sparse_vnni_g(const uint8_t *xt, int M, int Kb, int G, const int32_t *rp, const int32_t *col, const int8_t *vals, int N, const wb_epi_t *e, int nt)

cdef extern from "wb_tile_sparse.h" nogil:
    int wb_tile_sparse_count(const int8_t *w, int N, int K, int Kp, int32_t *panel_ptr)
    void wb_tile_sparse_pack(const int8_t *w, int N, int K, int Kp, const int32_t *panel_ptr, int32_t *chunk, int8_t *tiles)
    void wb_tile_sparse_amx(const uint8_t *xq, int M, int Kp, const int32_t *panel_ptr, const int32_t *chunk, const int8_t *tiles, int N, const wb_epi_t *e, int nt)

cdef enum:
    ISA_PORTABLE = 0
    ISA_AVX2 = 1
    ISA_VNNI = 2
    ISA_AMX = 3

_ISA_NAMES = {0: "portable", 1: "avx2", 2: "avx512_vnni", 3: "amx"}
MAX_K = 65535
# AVX2 dense: rows are blocked so one block of int16 activations (<= this many bytes) stays in L2
# while every weight panel passes over it.
DENSE_A_BLOCK_BYTES = 256 * 1024
# AVX2 sparse: K may be split into chunks of this many 1x4 blocks so a 16-row int16 activation
# slab stays in L1 (192 -> 24 KB).  Measured on the dev machine (AMD EPYC Zen3, 128x3072x3072 at
# 70 % sparsity): 1 chunk 13.7 ms, 192 -> 17.4 ms, 96 -> 22.4 ms -- the per-(column, chunk) cost
# (loop exit mispredict + reduction) outweighs the L2 -> L1 win, so chunking is OFF by default.
SPARSE_KB_CHUNK = 1 << 30
# AVX2 sparse: 16-row tiles (int16 activations, two output columns per loop) or 32-row tiles
# (u8 activations widened at load); 0 = auto: 32 rows when K > 1024.  Measured (1 thread, thread
# CPU time, best of 15, 70 % / 90 % block sparsity): 128x768x3072 16 rows 2.47 / 1.07 ms vs
# 32 rows 2.96 / 1.10; 128x3072x768 2.91 / 1.21 vs 2.88 / 1.09; 128x384x1536 0.50 / 0.26 vs
# 0.73 / 0.29.  Pairing columns (_set_sparse_pair_cols) measured 8-15 % faster than one at a time.
SPARSE_AVX2_ROWS = 0


cdef inline void* _ptr(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline object _empty(Py_ssize_t d0, Py_ssize_t d1, int typenum):
    """np.empty((d0, d1)) through the C API (this runs several times per kernel call)."""
    cdef cnp.npy_intp dims[2]
    dims[0] = d0
    dims[1] = d1
    return cnp.PyArray_EMPTY(2, dims, typenum, 0)


cdef inline object _empty1(Py_ssize_t d0, int typenum):
    cdef cnp.npy_intp dims[1]
    dims[0] = d0
    return cnp.PyArray_EMPTY(1, dims, typenum, 0)


cdef object aligned_bytes(Py_ssize_t nbytes):
    """uint8[nbytes] starting on a 64-byte boundary: with row widths that are multiples of 16
    floats every row then starts a cache line, and the kernels' 64-byte row stores write whole
    lines. (malloc's 16-byte alignment made the 90 %-sparse 768 x 3072 layer up to 2x slower in
    some processes than in others.)"""
    raw = _empty1(nbytes + 64, cnp.NPY_UINT8)
    cdef size_t addr = <size_t>cnp.PyArray_DATA(<cnp.ndarray>raw)
    cdef Py_ssize_t off = <Py_ssize_t>((64 - addr % 64) % 64)
    return raw[off:off + nbytes]


cdef Py_ssize_t scratch_bytes(int M, int Kp):
    """Bytes of per-call buffers any int8 kernel may need for M rows of Kp (padded) inputs: the
    AVX2 dense path's int16 activations and per-row int32 terms (2 * M * Kp + 4 * M) or a sparse
    path's row tiles (at most (M + 63) * Kp)."""
    return <Py_ssize_t>(M + 63) * Kp * 2 + 4 * <Py_ssize_t>M


cdef inline int _cap_threads(int nt, long macs):
    """At most one thread per ~256K multiply-adds: forking a team for less costs more than it saves."""
    cdef long cap = macs // 262144
    if cap < 1:
        cap = 1
    return <int>(nt if nt < cap else cap)


ACTIVATIONS = (None, "gelu")
"""What ``activation=`` accepts: GELU (erf form) fused into the epilogue, or nothing."""


cdef int _activation_code(object activation) except -1:
    if activation is None:
        return 0
    if activation == "gelu":
        return 1
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


cdef class _Int8Linear:
    """Shared parts of the dense and block-sparse int8 layers (see the module docstring;
    attributes and C methods are declared in int8.pxd)."""

    def __init__(self, w_s8, w_scale, bias=None, isa=None):
        N, K = check_weight(w_s8, "w_s8", np.int8, bias)
        if K > MAX_K:
            raise ValueError(f"w_s8: K={K} exceeds {MAX_K} (int32 accumulation would overflow)")
        check_array(w_scale, "w_scale", np.float32, 1)
        if w_scale.shape[0] != N:
            raise ValueError(f"w_scale must have shape ({N},) to match w_s8 {tuple(w_s8.shape)}, got {tuple(w_scale.shape)}")
        self.N = N
        self.K = K
        self.Kp = (K + 63) // 64 * 64
        self.w_s8 = w_s8.copy()
        self.w_scale = w_scale.copy()
        self.bias = None if bias is None else bias.copy()
        self._bias0 = np.zeros(N, np.float32) if bias is None else self.bias
        self._wsum = self.w_s8.sum(axis=1, dtype=np.int64).astype(np.int32)
        self._fixed_isa = None
        if isa is not None:
            _cpu.isa_code(isa)       # validates (unknown / unavailable -> ValueError)
            self._fixed_isa = str(isa).strip().lower()
        self._packed = -1
        self._packs = {}
        self._get_pack(self._resolve())

    def __repr__(self):
        extra = f", nnz_blocks={self.nnz_blocks}" if hasattr(self, "nnz_blocks") else ""
        return f"{type(self).__name__}(N={self.N}, K={self.K}{extra}, isa={self.isa!r})"

    @property
    def isa(self):
        """The ISA path the weights are currently packed for (the one the next call uses
        unless cpu.set_isa / $WORKBENCH_ISA changes in between)."""
        return _ISA_NAMES[self._packed]

    cdef int _resolve(self) except -1:
        name = self._fixed_isa if self._fixed_isa is not None else _cpu.active_isa()
        return _cpu.ISA_CODES[name]

    cdef object _get_pack(self, int code):
        """The weights packed for ISA `code` (built on first use, then kept): callers hold the
        returned object for the whole call, so concurrent calls under different ISAs (another
        thread calling cpu.set_isa) never see a layout swapped under them."""
        pack = self._packs.get(code)
        if pack is None:
            pack = self._make_pack(code)
            self._packs[code] = pack
        self._packed = code
        return pack

    cdef object _make_pack(self, int code):
        raise NotImplementedError

    cdef int _run(self, int code, object pack, object xq, int M, wb_epi_t *e, int nt, void *scratch) except -1:
        """The kernel for ISA `code`; `scratch` (NULL: allocate) holds its per-call buffers,
        at least `scratch_bytes(M, Kp)` bytes."""
        raise NotImplementedError

    cdef object _alloc_xq(self, int M):
        Mp = (M + 15) // 16 * 16
        xq = _empty(Mp, self.Kp, cnp.NPY_UINT8)
        if Mp > M:
            memset(<char*>_ptr(xq) + <size_t>M * self.Kp, 0, <size_t>(Mp - M) * self.Kp)
        return xq

    cdef long _macs(self, int M):
        return <long>M * self.N * self.K

    cdef object _output(self, object x, object out):
        """Check x float32[M, K] and return the float32[M, N] result buffer (``out`` or new)."""
        check_array(x, "x", np.float32, 2)
        if x.shape[1] != self.K:
            raise ValueError(f"x must have shape (M, {self.K}), got {tuple(x.shape)}")
        cdef int M = x.shape[0]
        if out is None:
            return aligned_bytes(<Py_ssize_t>M * self.N * 4).view(np.float32).reshape(M, self.N)
        check_array(out, "out", np.float32, 2)
        if out.shape[0] != M or out.shape[1] != self.N:
            raise ValueError(f"out must have shape ({M}, {self.N}), got {tuple(out.shape)}")
        return out

    cdef int _threads(self, object num_threads, int M) except -1:
        """Threads as given, else the default capped to the problem size (see ``__call__``)."""
        cdef int nt = wb_threads(check_threads(num_threads))
        return _cap_threads(nt, self._macs(M)) if num_threads is None else nt

    cdef int _gemm(self, int code, object xq, int M, object y, object zp, object xs, int nt,
                   object yi=None, int act=0, void *scratch=NULL) except -1:
        """The exact s32 GEMM of quantized rows xq with the fused epilogue
        ``y = (acc - zp * wsum) * (xs * w_scale) + bias``; with ``y`` None, the integer result
        ``acc - zp * wsum`` goes to ``yi`` int32[M, N] instead."""
        pack = self._get_pack(code)
        cdef wb_epi_t e
        e.N = self.N
        e.wsum = <const int32_t*>_ptr(self._wsum)
        e.wscale = <const float*>_ptr(self.w_scale)
        e.bias = <const float*>_ptr(self._bias0)
        e.zp = <const int32_t*>_ptr(zp)
        e.xscale = <const float*>_ptr(xs)
        e.y = NULL if y is None else <float*>_ptr(y)
        e.yi = NULL if yi is None else <int32_t*>_ptr(yi)
        # GELU as workbench_ext.ops.gelu computes it on this ISA (the AVX2 and AVX-512 codes
        # give identical values; the portable one uses libm's erff)
        e.act = 0 if act == 0 else (3 if code >= ISA_VNNI else 2 if code >= ISA_AVX2 else 1)
        return self._run(code, pack, xq, M, &e, nt, scratch)

    cdef int forward_into(self, object x, int M, object y, int act, object xq, object xs, object zp,
                          void *scratch, int nt=0) except -1:
        """The layer into caller-owned buffers, without checks or allocations (``__call__``
        and workbench_ext.encoder size them): x float32 [>= M, K] and y float32 [>= M, N]
        C-contiguous, xq uint8 [>= round16(M) * Kp], xs float32 [>= M], zp int32 [>= M],
        scratch >= scratch_bytes(M, Kp) bytes (NULL: the kernel allocates), nt threads (0: the
        default, capped to the problem size)."""
        if M == 0:
            return 0
        if nt <= 0:
            nt = self._threads(None, M)
        cdef int code = self._resolve()
        cdef const float *px = <const float*>_ptr(x)
        cdef uint8_t *pq = <uint8_t*>_ptr(xq)
        cdef float *ps = <float*>_ptr(xs)
        cdef int32_t *pz = <int32_t*>_ptr(zp)
        cdef int K = self.K, Kp = self.Kp
        cdef int Mp = (M + 15) // 16 * 16
        with nogil:
            wb_quantize_rows(px, M, K, Kp, pq, ps, pz, code, nt)
            if Mp > M:
                memset(pq + <size_t>M * Kp, 0, <size_t>(Mp - M) * Kp)
        return self._gemm(code, xq, M, y, zp, xs, nt, None, act, scratch)

    def __call__(self, x, num_threads=None, out=None, activation=None):
        """y = layer(x): x float32[M, K] (C-contiguous) -> float32[M, N].
        ``activation``: None, or "gelu": y = gelu(layer(x)) applied to each output tile while it
        is in cache, bit-identical to ``workbench_ext.ops.gelu(layer(x))`` on the same ISA.
        ``num_threads``: threads, used as given; by default omp_get_max_threads()
        (OMP_NUM_THREADS or cpu.set_num_threads), capped to ~1 thread per 256K MACs so tiny
        problems do not pay for a thread team.
        ``out``: optional preallocated float32[M, N] C-contiguous result buffer."""
        y = self._output(x, out)
        cdef int act = _activation_code(activation)
        cdef int M = x.shape[0]
        if M == 0:
            return y
        self.forward_into(x, M, y, act, _empty((M + 15) // 16 * 16, self.Kp, cnp.NPY_UINT8),
                          _empty1(M, cnp.NPY_FLOAT32), _empty1(M, cnp.NPY_INT32), NULL,
                          self._threads(num_threads, M))
        return y

    def static(self, x, input_scale, input_zero_point, num_threads=None, out=None, activation=None):
        """y = layer with a static (calibrated) activation grid: every row of x float32[M, K] is
        quantized with the same ``input_scale`` / ``input_zero_point`` (u8 asymmetric, as
        ``workbench_ext.ops.quantize_static``) instead of its own range; then the same exact s32
        GEMM and fused epilogue as ``__call__`` (``y = (acc - zp * wsum) * (scale * w_scale) + bias``,
        then ``activation``)."""
        y = self._output(x, out)
        cdef int act = _activation_code(activation)
        cdef float fs = float(input_scale)
        if not (fs > 0.0) or not np.isfinite(fs):
            raise ValueError(f"input_scale must be a finite number > 0, got {input_scale!r}")
        zp_int = int(input_zero_point)
        if zp_int < 0 or zp_int > 255 or zp_int != input_zero_point:
            raise ValueError(f"input_zero_point must be an integer in [0, 255], got {input_zero_point!r}")
        cdef int32_t zpv = zp_int
        cdef int M = x.shape[0]
        cdef int nt = self._threads(num_threads, M)
        cdef int code = self._resolve()
        if M == 0:
            return y
        xq = self._alloc_xq(M)
        xs = np.full(M, fs, np.float32)
        zp = np.full(M, zpv, np.int32)
        cdef const float *px = <const float*>_ptr(x)
        cdef uint8_t *pq = <uint8_t*>_ptr(xq)
        cdef int K = self.K, Kp = self.Kp
        with nogil:
            wb_quantize_rows_static(px, M, K, Kp, fs, zpv, pq, code, nt)
        self._gemm(code, xq, M, y, zp, xs, nt, None, act)
        return y

    def qmatmul(self, q, zero_point, num_threads=None):
        """Exact integer core on already-quantized activations (for tests / debugging):
        q uint8[M, K], zero_point int32[M] -> int32[M, N] = sum_k (q - zp) * w, through the
        same packed weights and ISA kernel as __call__."""
        check_array(q, "q", np.uint8, 2)
        if q.shape[1] != self.K:
            raise ValueError(f"q must have shape (M, {self.K}), got {tuple(q.shape)}")
        check_array(zero_point, "zero_point", np.int32, 1)
        if zero_point.shape[0] != q.shape[0]:
            raise ValueError(f"zero_point must have shape ({q.shape[0]},), got {tuple(zero_point.shape)}")
        cdef int M = q.shape[0]
        cdef int nt = self._threads(num_threads, M)
        cdef int code = self._resolve()
        out = np.empty((M, self.N), np.int32)
        if M == 0:
            return out
        xq = self._alloc_xq(M)
        xq[:M, :self.K] = q
        xq[:M, self.K:] = 0
        self._gemm(code, xq, M, None, zero_point, np.ones(M, np.float32), nt, out)
        return out


include "int8_dense.pxi"
include "int8_sparse.pxi"


def _set_sparse_pair_cols(int on):
    """Experiment switch (AVX2 16-row sparse kernel): process two output columns per loop."""
    global wb_sparse_pair_cols
    wb_sparse_pair_cols = on


def _set_amx_pipelined(int on):
    """Experiment switch (AMX dense kernel): 1 runs each work item's epilogue between the next
    item's tile multiplies (the default), 0 the plain worker (multiply, store, then epilogue).
    Same results either way; for the A/B in `python -m workbench.bench.gemm` on AMX CPUs."""
    global wb_amx_pipelined
    wb_amx_pipelined = 1 if on else 0


def _set_sparse_epi_direct(int on):
    """Experiment switch (AVX-512 VNNI sparse epilogue): 1 stores output rows straight after the
    transpose where every row starts a cache line (the default), 0 always through the row buffer.
    Same results either way."""
    global wb_sparse_epi_direct
    wb_sparse_epi_direct = 1 if on else 0
