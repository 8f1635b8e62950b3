# The int8 Linear layers' C-level interface, for other kernel modules (workbench_ext.encoder
# runs a whole encoder on them without going through Python calls).
from libc.stdint cimport int8_t, uint8_t, int16_t, int32_t

cdef extern from "wb_int8.h" nogil:
    ctypedef struct wb_epi_t:
        int N
        const int32_t *wsum
        const float *wscale
        const float *bias
        const int32_t *zp
        const float *xscale
        float *y
        int32_t *yi
        int act
        int col_segments


cdef class _Int8Linear:
    cdef readonly int N, K, Kp, act_bits
    cdef readonly bint pair_bounded
    cdef bint _u8_exact
    cdef readonly object w_s8, w_scale, bias
    cdef object _bias0, _wsum, _fixed_isa
    cdef int _packed
    cdef dict _packs

    cdef int _resolve(self) except -1
    cdef int _resolve_given(self, int code) except -1
    cdef object _get_pack(self, int code)
    cdef object _make_pack(self, int code)
    cdef int _run(self, int code, object pack, object xq, int M, wb_epi_t *e, int nt, void *scratch) except -1
    cdef object _alloc_xq(self, int M)
    cdef long _macs(self, int M)
    cdef object _output(self, object x, object out)
    cdef int _threads(self, object num_threads, int M) except -1
    cdef int _gemm(self, int code, object xq, int M, object y, object zp, object xs, int nt,
                   object yi=*, int act=*, void *scratch=*, int col_segments=*) except -1
    cdef int forward_into(self, object x, int M, object y, int act, object xq, object xs, object zp,
                          void *scratch, int nt=*, int col_segments=*, int code=*) except -1


cdef class DenseInt8Linear(_Int8Linear):
    pass


cdef class TileSparseInt8Linear(DenseInt8Linear):
    cdef readonly int nnz_tiles, num_tiles


cdef class LibraryInt8Linear(_Int8Linear):
    pass


cdef class BlockSparseInt8Linear(_Int8Linear):
    cdef readonly object row_ptr, col_idx, values
    cdef readonly int nnz_blocks, Kb


cdef Py_ssize_t scratch_bytes(int M, int Kp)
cdef object aligned_bytes(Py_ssize_t nbytes)
cdef object aligned_zeros(object shape, object dtype)
