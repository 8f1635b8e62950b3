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
  Sparse: vectorised over 16 tokens (int16 activations).  With 7-bit activations
  (``act_bits=7``) or ``pair_bounded`` weights (every k-pair has |w[2j]| + |w[2j+1]| <= 128,
  checked at construction) the u8 x s8 ``vpmaddubsw`` pair sums cannot saturate, and the dense
  and (past 16 rows) sparse layers run the u8 kernels instead (wb_int8_dense_avx2_u7.h,
  wb_int8_sparse_avx2_32.h): three instructions per 32 multiply-adds against five.
* ``avx512_vnni``: ``vpdpbusd`` 8x32 micro-kernel on u8 x s8 (16 zmm accumulators).  Sparse:
  tiles of up to 64 rows, activations packed with 16x16 register transposes, a 16x16 epilogue
  (same bits as the AVX2 epilogue) that stores each transposed row piece straight to the output
  when every output row starts a cache line, else writes each output row in one sweep.
* ``amx``: ``TDPBUSD`` on 16x64 u8 activation tiles and 16x64 VNNI-packed s8 weight tiles,
  2x2 tiles = 32x32 outputs per step; each step's epilogue runs a few rows at a time between the
  next step's tile multiplies (``_set_amx_pipelined(0)``: after them, for the A/B;
  ``_set_amx_probe`` leaves parts out, wrong outputs, to time them on AMX CPUs).  The 1x4
  block-sparse layer has no AMX kernel (tiles cannot skip 1x4 blocks); under ``amx`` it runs the
  ``avx512_vnni`` sparse kernel.  ``TileSparseInt8Linear`` is the AMX sparse layout: it keeps
  only the 16x64 weight blocks (one B tile each) that hold a non-zero and skips the rest
  (wb_tile_sparse.h); ``avx512_vnni`` runs the same format, each 64-byte load of 16 rows x 4 k
  of activations shared by a kept tile's 16 columns (their weights broadcast operands), and
  ``avx2`` and ``portable`` their dense kernel.

Executed on the development machines: ``portable``, ``avx2`` (AMD EPYC Zen 2 and Zen 3) and
``avx512_vnni`` (AMD EPYC Zen 5); the AMX code compiles into every build, runs its real-hardware
tests only on CPUs that have it, and is checked everywhere against a scalar emulation of its
intrinsics (testing/emulate_isa.c); its real-hardware tests passed on a borrowed Intel Emerald
Rapids (results/bench/emr-amx/).

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
    int wb_amx_order
    int wb_amx_probe
    long wb_amx_group_bytes
    ctypedef struct wb_amx_tuning_t:
        int a_packed
        int a_ahead
        int b_ahead
        int b_next
    wb_amx_tuning_t wb_amx_tuning
    int wb_sparse_epi_direct
    int wb_spv_gmax
    int wb_threads(int nt)
    void wb_quantize_rows(const float *x, int M, int K, int Kp, uint8_t *q, float *scale, int32_t *zp, int isa, int nt, int qmax)
    void wb_quantize_rows_static(const float *x, int M, int K, int Kp, float scale, int32_t zp, uint8_t *q, int isa, int nt)
    void wb_pack_dense_portable(const int8_t *w, int N, int K, int Kp, int8_t *out)
    void wb_pack_dense_avx2(const int8_t *w, int N, int K, int Kp, int16_t *out, int32_t *eta)
    void wb_pack_dense_vnni(const int8_t *w, int N, int K, int Kp, int8_t *out)
    void wb_widen_pairs_avx2(const uint8_t *q, int M, int Kp, const int32_t *zp, int16_t *out, int32_t *xi)
    void wb_dense_portable(const uint8_t *xq, int M, int Kp, const int8_t *w, int N, const wb_epi_t *e, int nt)
    void wb_dense_avx2_u7(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N, const wb_epi_t *e, int nt, long a_block_bytes)
    void wb_dense_avx2(const int16_t *xs, const int32_t *xi, int M, int Kp, const int16_t *Bp, const int32_t *eta, int N, const wb_epi_t *e, int nt, long a_block_bytes)
    void wb_dense_vnni(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N, const wb_epi_t *e, int nt)
    void wb_dense_amx(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N, const wb_epi_t *e, int nt)
    void wb_sparse_portable(const uint8_t *xq, int M, int Kp, const int32_t *rp, const int32_t *col, const int8_t *vals, int N, const wb_epi_t *e, int nt)
    void wb_pack_x_sparse_u8(const uint8_t *xq, int M, int Kp, int Kb, uint8_t *out, int nt)
    void wb_sparse_avx2(const int16_t *xt, int M, int Kb, const int32_t *rpc, int nch, const int32_t *col, const int16_t *vals16, int N, const wb_epi_t *e, int nt)
    void wb_pack_x_sparse_s16_avx2(const uint8_t *xq, int M, int Kp, int Kb, int16_t *out, int nt)
    void wb_pack_x_sparse_u8_32(const uint8_t *xq, int M, int Kp, int Kb, uint8_t *out, int nt)
    void wb_sparse_avx2_32(const uint8_t *xt, int M, int Kb, const int32_t *rp, const int32_t *col, const void *vals, int u7, int N, const wb_epi_t *e, int nt)
    void wb_sparse_vnni(const uint8_t *xt, int M, int Kb, const int32_t *rp, const int32_t *col, const int8_t *vals, int N, const wb_epi_t *e, int nt)
    int wb_sparse_vnni_groups(int M, int Kb)
    void wb_pack_x_sparse_u8_g(const uint8_t *xq, int M, int Kp, int Kb, int G, uint8_t *out, int nt)
    void wb_pack_x_sparse_vnni "WB_PACK_X_SPARSE_VNNI"(const uint8_t *xq, int M, int Kp, int Kb, int G, uint8_t *out, int nt)
    void wb_quant_pack_sparse_vnni(const float *x, int M, int K, int Kp, int Kb, int G, uint8_t *xq, float *scale, int32_t *zp, uint8_t *xt, int isa, int nt, int qmax)
    void wb_sparse_vnni_g(const uint8_t *xt, int M, int Kb, int G, const int32_t *rp, const int32_t *col, const int8_t *vals, int N, const wb_epi_t *e, int nt)

cdef extern from "wb_tile_sparse.h" nogil:
    int wb_tile_sparse_count(const int8_t *w, int N, int K, int Kp, int32_t *panel_ptr)
    void wb_tile_sparse_pack(const int8_t *w, int N, int K, int Kp, const int32_t *panel_ptr, int32_t *chunk, int8_t *tiles)
    void wb_tile_sparse_amx(const uint8_t *xq, int M, int Kp, const int32_t *panel_ptr, const int32_t *chunk, const int8_t *tiles, int N, const wb_epi_t *e, int nt)
    void wb_tile_sparse_vnni(const uint8_t *xt, int M, int Kp, const int32_t *panel_ptr, const int32_t *chunk, const int8_t *tiles, int N, const wb_epi_t *e, int nt)

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
# AVX2 sparse, 8-bit activations: 16-row tiles (int16 activations, two output columns per loop)
# or 32-row tiles (u8 activations widened at load).  16 since 2026-12-04; it was 32 for K > 1024
# until the 16-row kernel paired its columns.  Re-measured then (Zen 3, 1 thread, best of 100,
# 16 vs 32 rows): 128x3072x768 at 90 % 0.91 vs 1.13 ms, at 50 % 3.72 vs 4.61; 128x4096x1024 at
# 90 % 1.58 vs 1.92; 8x3072x768 at 90 % 0.11 vs 0.26; 128x768x3072 at 90 % 0.81 vs 1.08.
SPARSE_AVX2_ROWS = 16
# AVX2, act_bits=7: the vpmaddubsw kernel (32-row u8 tiles) for more rows than this or K > 1024;
# otherwise the 16-row int16 kernel, which wastes fewer rows of a tile (7-bit inputs are exact
# there too).  Measured (Zen 3, 1 thread, 90 % sparse 3072x768): M = 16: 0.15 ms vs 0.12 int16;
# M = 17: 0.15 vs 0.19; M = 128: 0.65 vs 0.81 (128x768x3072 at 70 %: 1.66 vs 2.86, 32-row int16).
SPARSE_U7_MIN_ROWS = 16
# The AVX2 u8 kernels (vpmaddubsw) are exact for 8-bit activations when every weight pair along
# k has |w[2j]| + |w[2j+1]| <= PAIR_BOUND: 255 * 128 = 32640 fits the s16 pair sum.
PAIR_BOUND = 128


def _pairs_within(w_s8, int bound):
    """Whether every row's k-pairs (2j, 2j+1) of int8 ``w_s8`` have |w[2j]| + |w[2j+1]| <= bound
    (an odd K's last weight pairs with the zero padding)."""
    a = np.abs(w_s8.astype(np.int16))
    if a.shape[1] % 2:
        a = np.concatenate([a, np.zeros((a.shape[0], 1), np.int16)], axis=1)
    return bool(a.size == 0 or int((a[:, 0::2] + a[:, 1::2]).max()) <= bound)


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


cdef enum:
    PAGE_BYTES = 4096


cdef object aligned_bytes(Py_ssize_t nbytes):
    """uint8[nbytes] starting on a 64-byte boundary, and on a page boundary (4096 bytes) when it
    is a page or more. At 64: with row widths that are multiples of 16 floats every row starts a
    cache line, and the kernels' 64-byte row stores write whole lines (malloc's 16-byte alignment
    made the 90 %-sparse 768 x 3072 layer up to 2x slower in some processes than in others). At a
    page: where in its page a buffer starts varied from process to process, and with it the
    speed. Three copies of the same 90 %-sparse engine in one process ran up to 9 % apart
    (DistilBERT-base, batch 8, Zen 5), each at its own level in every round; with the buffers
    page-aligned they ran within 1 % of each other, at the fast end
    (results/bench/zen5-process-level/)."""
    cdef size_t align = PAGE_BYTES if nbytes >= PAGE_BYTES else 64
    raw = _empty1(nbytes + align, cnp.NPY_UINT8)
    cdef size_t addr = <size_t>cnp.PyArray_DATA(<cnp.ndarray>raw)
    cdef Py_ssize_t off = <Py_ssize_t>((align - addr % align) % align)
    return raw[off:off + nbytes]


def _aligned_bytes(Py_ssize_t nbytes):
    """`aligned_bytes` for the tests."""
    return aligned_bytes(nbytes)


cdef object aligned_zeros(object shape, object dtype):
    """np.zeros(shape, dtype) starting on a 64-byte boundary, for packed weights: NumPy's large
    arrays start 16 or 32 bytes past a line, varying by process, and at 16 half of the AVX2
    kernels' 32-byte weight loads straddle two cache lines (measured on Zen 3: the dense 4-row
    kernel over a 768 x 3072 layer at ~148 instead of ~160 GOP/s)."""
    dt = np.dtype(dtype)
    cdef Py_ssize_t n = 1
    for d in shape:
        n *= <Py_ssize_t>d
    out = aligned_bytes(n * dt.itemsize).view(dt).reshape(shape)
    out.fill(0)
    return out


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


include "int8_layer.pxi"
include "int8_dense.pxi"
include "int8_sparse.pxi"
include "int8_library.pxi"
include "int8_switches.pxi"
