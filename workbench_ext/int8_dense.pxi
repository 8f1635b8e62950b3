# Included by int8.pyx (one module, split by job): the dense int8 layer and its AMX tile-sparse
# variant, which share the dense packing off AMX.

cdef class DenseInt8Linear(_Int8Linear):
    """Dense int8 linear: ``DenseInt8Linear(w_s8 int8[N, K], w_scale float32[N], bias float32[N] | None)``.
    Optional ``isa=`` pins one path (else cpu.active_isa() per call); ``act_bits=7`` quantizes
    activations onto [0, 127].  On AVX2 the faster exact vpmaddubsw kernel runs for 7-bit
    activations, or for 8-bit ones when the weights are ``pair_bounded``."""
    cdef object _make_pack(self, int code):
        cdef int N = self.N, K = self.K, Kp = self.Kp
        w = self.w_s8
        if code == ISA_PORTABLE:
            wp = aligned_zeros((N, Kp), np.int8)
            wb_pack_dense_portable(<const int8_t*>_ptr(w), N, K, Kp, <int8_t*>_ptr(wp))
        elif code == ISA_AVX2 and not self._u8_exact:
            wp = aligned_zeros(((N + 15) // 16, Kp * 16), np.int16)
            eta = aligned_zeros(((N + 15) // 16 * 16,), np.int32)
            wb_pack_dense_avx2(<const int8_t*>_ptr(w), N, K, Kp, <int16_t*>_ptr(wp), <int32_t*>_ptr(eta))
            return (wp, eta)
        else:   # VNNI, AMX and the AVX2 u8 kernel share the layout; AMX wants an even number of 16-col panels
            wp = aligned_zeros(((N + 31) // 32 * 2, Kp * 16), np.int8)
            wb_pack_dense_vnni(<const int8_t*>_ptr(w), N, K, Kp, <int8_t*>_ptr(wp))
        return wp

    cdef int _run(self, int code, object pack, object xq, int M, wb_epi_t *e, int nt, void *scratch) except -1:
        cdef int N = self.N, Kp = self.Kp
        cdef const uint8_t *pq = <const uint8_t*>_ptr(xq)
        cdef void *pw
        cdef const int32_t *peta
        cdef int16_t *p16
        cdef int32_t *pxi
        cdef long ablock
        if code == ISA_AVX2 and not self._u8_exact:
            pw = _ptr(pack[0])
            peta = <const int32_t*>_ptr(pack[1])
        else:
            pw = _ptr(pack)
        if code == ISA_PORTABLE:
            with nogil:
                wb_dense_portable(pq, M, Kp, <const int8_t*>pw, N, e, nt)
        elif code == ISA_AVX2 and self._u8_exact:
            ablock = DENSE_A_BLOCK_BYTES
            with nogil:
                wb_dense_avx2_u7(pq, M, Kp, <const int8_t*>pw, N, e, nt, ablock)
        elif code == ISA_AVX2:
            if scratch == NULL:
                xs16 = aligned_bytes(scratch_bytes(M, Kp))
                scratch = _ptr(xs16)
            p16 = <int16_t*>scratch
            pxi = <int32_t*>(p16 + <size_t>M * Kp)
            ablock = DENSE_A_BLOCK_BYTES
            with nogil:
                wb_widen_pairs_avx2(pq, M, Kp, e.zp, p16, pxi)
                wb_dense_avx2(p16, pxi, M, Kp, <const int16_t*>pw, peta, N, e, nt, ablock)
        elif code == ISA_VNNI:
            with nogil:
                wb_dense_vnni(pq, M, Kp, <const int8_t*>pw, N, e, nt)
        else:
            with nogil:
                wb_dense_amx(pq, M, Kp, <const int8_t*>pw, N, e, nt)
        return 0


cdef class TileSparseInt8Linear(DenseInt8Linear):
    """Tile-block sparse int8 linear: ``TileSparseInt8Linear(w_s8 int8[N, K],
    w_scale float32[N], bias float32[N] | None)``.  Under ``amx`` and ``avx512_vnni`` only the
    16-column x 64-k blocks of the weights that hold a non-zero are stored, each as one TDPBUSD
    B tile (16 VNNI weight vectors), and the kernel skips the rest (format and kernels:
    wb_tile_sparse.h); weights pruned in (16, 64) blocks have a fraction of tiles zero equal to
    their sparsity.  Under ``avx2`` and ``portable`` the layer runs the dense kernel of the ISA.
    Same bits as the dense layer on every path.  ``nnz_tiles`` / ``num_tiles``: stored and all
    16x64 blocks."""

    def __init__(self, w_s8, w_scale, bias=None, isa=None, act_bits=8):
        DenseInt8Linear.__init__(self, w_s8, w_scale, bias, isa, act_bits)
        ptr = np.zeros((self.N + 15) // 16 + 1, np.int32)
        self.num_tiles = (ptr.shape[0] - 1) * (self.Kp // 64)
        self.nnz_tiles = wb_tile_sparse_count(<const int8_t*>_ptr(self.w_s8), self.N, self.K, self.Kp,
                                              <int32_t*>_ptr(ptr))

    @property
    def tile_sparsity(self):
        """Fraction of the 16x64 weight blocks that are all zero (skipped under AMX and AVX-512 VNNI)."""
        return 1.0 - self.nnz_tiles / self.num_tiles if self.num_tiles else 0.0

    def __repr__(self):
        a7 = ", act_bits=7" if self.act_bits == 7 else ", pair_bounded" if self.pair_bounded else ""
        return f"TileSparseInt8Linear(N={self.N}, K={self.K}, nnz_tiles={self.nnz_tiles}/{self.num_tiles}{a7}, isa={self.isa!r})"

    cdef int forward_into(self, object x, int M, object y, int act, object xq, object xs, object zp,
                          void *scratch, int nt=0, int col_segments=0, int code=-1) except -1:
        """``_Int8Linear.forward_into``; under ``avx512_vnni`` the rows are quantized and packed
        for the tile kernel in one parallel job (``_quantize_pack_gemm``)."""
        code = self._resolve_given(code)
        if M == 0 or code != ISA_VNNI:
            return DenseInt8Linear.forward_into(self, x, M, y, act, xq, xs, zp, scratch, nt, col_segments, code)
        return _quantize_pack_gemm(self, code, self.Kp // 4, 1, x, M, y, act, xq, xs, zp, scratch, nt,
                                   col_segments)

    cdef object _make_pack(self, int code):
        if code != ISA_AMX and code != ISA_VNNI:
            return DenseInt8Linear._make_pack(self, code)
        cdef int N = self.N, K = self.K, Kp = self.Kp
        w = self.w_s8
        # every packed array starts a cache line, the offset tables too (tests check them all)
        ptr = aligned_zeros(((N + 15) // 16 + 1,), np.int32)
        cdef int nnz = wb_tile_sparse_count(<const int8_t*>_ptr(w), N, K, Kp, <int32_t*>_ptr(ptr))
        chunk = aligned_zeros((max(nnz, 1),), np.int32)
        tiles = aligned_zeros((max(nnz, 1), 1024), np.int8)
        wb_tile_sparse_pack(<const int8_t*>_ptr(w), N, K, Kp, <const int32_t*>_ptr(ptr),
                            <int32_t*>_ptr(chunk), <int8_t*>_ptr(tiles))
        return (ptr, chunk, tiles)

    cdef int _run(self, int code, object pack, object xq, int M, wb_epi_t *e, int nt, void *scratch) except -1:
        if code != ISA_AMX and code != ISA_VNNI:
            return DenseInt8Linear._run(self, code, pack, xq, M, e, nt, scratch)
        cdef const uint8_t *pq = <const uint8_t*>_ptr(xq) if xq is not None else NULL   # None: packed already
        cdef const int32_t *pp = <const int32_t*>_ptr(pack[0])
        cdef const int32_t *pc = <const int32_t*>_ptr(pack[1])
        cdef const int8_t *pt = <const int8_t*>_ptr(pack[2])
        cdef int N = self.N, Kp = self.Kp
        if code == ISA_VNNI:   # rows packed as the 1x4 sparse VNNI kernel packs them, G = 1
            if scratch == NULL:
                xt = aligned_bytes(scratch_bytes(M, Kp))
                scratch = _ptr(xt)
            with nogil:
                if pq != NULL:   # else forward_into packed them as it quantized
                    wb_pack_x_sparse_vnni(pq, M, Kp, Kp // 4, 1, <uint8_t*>scratch, nt)
                wb_tile_sparse_vnni(<const uint8_t*>scratch, M, Kp, pp, pc, pt, N, e, nt)
        else:
            with nogil:
                wb_tile_sparse_amx(pq, M, Kp, pp, pc, pt, N, e, nt)
        return 0
