"""fp32 1x4 block-sparse linear layer: y = x @ W^T + bias with W stored as non-zero 1x4 blocks.

``BlockSparseFp32Linear(w float32[N, K], bias float32[N] | None)`` packs the non-zero blocks
``w[n, 4*b : 4*b + 4]`` (K zero-padded to a multiple of 4) in CSR by output row --
``row_ptr int32[N + 1]``, ``col_idx int32[nnz_blocks]`` (block index b), ``values float32[nnz_blocks, 4]``
-- the same layout as :class:`workbench_ext.int8.BlockSparseInt8Linear`.  A call repacks x into
8-token tiles and the kernel is vectorised over tokens; only stored blocks are touched.

Paths: ``avx2`` (AVX2 + FMA, measured on the development machine) and ``portable`` (plain C).
``amx`` / ``avx512_vnni`` use the AVX2 kernel (there is no AVX-512 fp32 kernel).
"""

include "_pool_bind.pxi"
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int32_t

from workbench_ext._validate cimport check_array, check_threads, check_weight
from workbench_ext import cpu as _cpu

cnp.import_array()

cdef extern from "wb_sparse.h" nogil:
    int wb_f32_pair_cols
    int wb_threads(int nt)
    void wb_f32_pack_x(const float *x, int M, int K, int Kb, float *out, int nt)
    void wb_f32_sparse_portable(const float *xt, int M, int Kb, const int32_t *rp, const int32_t *col, const float *vals, const float *bias, int N, float *y, int nt)
    void wb_f32_sparse_avx2(const float *xt, int M, int Kb, const int32_t *rp, const int32_t *col, const float *vals, const float *bias, int N, float *y, int nt)


cdef inline void* _ptr(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef class BlockSparseFp32Linear:
    """``BlockSparseFp32Linear(w float32[N, K], bias float32[N] | None)``; ``layer(x float32[M, K]) -> float32[M, N]``."""
    cdef readonly int N, K, Kb, nnz_blocks
    cdef readonly object row_ptr, col_idx, values, bias
    cdef object _bias0, _fixed_isa

    def __init__(self, w, bias=None, isa=None):
        N, K = check_weight(w, "w", np.float32, bias)
        self._fixed_isa = None
        if isa is not None:
            _cpu.isa_code(isa)
            self._fixed_isa = str(isa).strip().lower()
        Kb = (K + 3) // 4
        wpad = np.zeros((N, Kb * 4), np.float32)
        wpad[:, :K] = w
        blocks = wpad.reshape(N, Kb, 4)
        nz = (blocks != 0).any(axis=2)
        self.N, self.K, self.Kb = N, K, Kb
        self.row_ptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype(np.int32)
        self.col_idx = np.ascontiguousarray(np.nonzero(nz)[1].astype(np.int32))
        self.values = np.ascontiguousarray(blocks[nz])
        self.nnz_blocks = int(self.col_idx.shape[0])
        self.bias = None if bias is None else bias.copy()
        self._bias0 = np.zeros(N, np.float32) if bias is None else self.bias

    def __repr__(self):
        return f"BlockSparseFp32Linear(N={self.N}, K={self.K}, nnz_blocks={self.nnz_blocks}, isa={self.isa!r})"

    @property
    def isa(self):
        """Path the next call uses: ``"avx2"`` when the active ISA is AVX2 or better, else ``"portable"``."""
        name = self._fixed_isa if self._fixed_isa is not None else _cpu.active_isa()
        return "portable" if name == "portable" else "avx2"

    @property
    def block_sparsity(self):
        return 1.0 - self.nnz_blocks / float(self.N * self.Kb)

    def __call__(self, x, num_threads=None, out=None):
        """y = layer(x); ``num_threads`` is used as given (default omp_get_max_threads(), capped
        for tiny problems),
        ``out`` an optional preallocated float32[M, N] C-contiguous result."""
        check_array(x, "x", np.float32, 2)
        if x.shape[1] != self.K:
            raise ValueError(f"x must have shape (M, {self.K}), got {tuple(x.shape)}")
        cdef int nt = wb_threads(check_threads(num_threads))
        cdef bint avx2 = self.isa == "avx2"
        cdef int M = x.shape[0], N = self.N, K = self.K, Kb = self.Kb
        if out is None:
            y = np.empty((M, N), np.float32)
        else:
            check_array(out, "out", np.float32, 2)
            if out.shape[0] != M or out.shape[1] != N:
                raise ValueError(f"out must have shape ({M}, {N}), got {tuple(out.shape)}")
            y = out
        cdef long cap = (<long>M * self.nnz_blocks * 4) // 131072
        if cap < 1:
            cap = 1
        if num_threads is None and nt > cap:
            nt = <int>cap
        if M == 0:
            return y
        xt = np.empty(((M + 7) // 8, Kb * 32), np.float32)
        cdef const float *px = <const float*>_ptr(x)
        cdef float *pt = <float*>_ptr(xt)
        cdef float *py = <float*>_ptr(y)
        cdef const int32_t *rp = <const int32_t*>_ptr(self.row_ptr)
        cdef const int32_t *col = <const int32_t*>_ptr(self.col_idx)
        cdef const float *vals = <const float*>_ptr(self.values)
        cdef const float *pb = <const float*>_ptr(self._bias0)
        with nogil:
            wb_f32_pack_x(px, M, K, Kb, pt, nt)
            if avx2:
                wb_f32_sparse_avx2(pt, M, Kb, rp, col, vals, pb, N, py, nt)
            else:
                wb_f32_sparse_portable(pt, M, Kb, rp, col, vals, pb, N, py, nt)
        return y


def _set_pair_cols(int on):
    """Experiment switch (AVX2 kernel): process two output columns per loop (default on)."""
    global wb_f32_pair_cols
    wb_f32_pair_cols = on
