# Included by int8.pyx (one module, split by job): the 1x4 block-sparse int8 layer.

cdef class BlockSparseInt8Linear(_Int8Linear):
    """1x4 block-sparse int8 linear (see the module docstring for the packed CSR format):
    ``BlockSparseInt8Linear(w_s8 int8[N, K], w_scale float32[N], bias float32[N] | None)``."""

    def __init__(self, w_s8, w_scale, bias=None, isa=None, act_bits=8):
        check_array(w_s8, "w_s8", np.int8, 2)
        N, K = w_s8.shape
        Kb = (K + 3) // 4
        wpad = np.zeros((N, Kb * 4), np.int8)
        wpad[:, :K] = w_s8
        blocks = wpad.reshape(N, Kb, 4)
        nz = blocks.any(axis=2)
        self.Kb = Kb
        self.row_ptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype(np.int32)
        self.col_idx = np.ascontiguousarray(np.nonzero(nz)[1].astype(np.int32))
        self.values = np.ascontiguousarray(blocks[nz])
        self.nnz_blocks = int(self.col_idx.shape[0])
        super().__init__(w_s8, w_scale, bias, isa, act_bits)

    cdef long _macs(self, int M):
        return <long>M * self.nnz_blocks * 4

    @property
    def block_sparsity(self):
        """Fraction of 1x4 blocks that are all zero."""
        return 1.0 - self.nnz_blocks / float(self.N * self.Kb)

    cdef object _make_pack(self, int code):
        """AVX2: (int16 values, per-chunk row pointers, number of K chunks); others use the CSR
        arrays directly."""
        if code == ISA_AVX2:
            vals16 = aligned_zeros(self.values.shape, np.int16)
            vals16[...] = self.values
            # K chunks of <= SPARSE_KB_CHUNK blocks (16-row s16 slab <= 24 KB stays in L1):
            # rpc[n, c] = first block of row n whose k-block is in chunk c
            N, Kb = self.N, self.Kb
            nch = (Kb + SPARSE_KB_CHUNK - 1) // SPARSE_KB_CHUNK
            kc = (Kb + nch - 1) // nch
            rp = self.row_ptr.astype(np.int64)
            rows = np.repeat(np.arange(N), np.diff(rp))
            counts = np.bincount(rows * nch + self.col_idx // kc, minlength=N * nch).reshape(N, nch)
            rpc = aligned_zeros((N, nch + 1), np.int32)
            rpc[:, 0] = rp[:N]
            rpc[:, 1:] = rp[:N, None] + np.cumsum(counts, axis=1)
            return (vals16, rpc, nch)
        return ()

    cdef int _run(self, int code, object pack, object xq, int M, wb_epi_t *e, int nt, void *scratch) except -1:
        cdef int N = self.N, Kp = self.Kp, Kb = self.Kb
        cdef const uint8_t *pq = <const uint8_t*>_ptr(xq) if xq is not None else NULL   # None: packed already
        cdef const int32_t *rp = <const int32_t*>_ptr(self.row_ptr)
        cdef const int32_t *col = <const int32_t*>_ptr(self.col_idx)
        cdef const int8_t *vals = <const int8_t*>_ptr(self.values)
        cdef int16_t *pt16
        cdef uint8_t *pt8
        cdef const int16_t *pv16
        cdef const void *vals32
        cdef const int32_t *prpc
        cdef int nch, G
        cdef bint maddubs_tiles = code == ISA_AVX2 and self._u8_exact and (M > SPARSE_U7_MIN_ROWS or self.K > 1024)
        if code != ISA_PORTABLE and scratch == NULL:   # every SIMD path packs its activations
            xt = aligned_bytes(scratch_bytes(M, Kp))
            scratch = _ptr(xt)
        if code == ISA_PORTABLE:
            with nogil:
                wb_sparse_portable(pq, M, Kp, rp, col, vals, N, e, nt)
        elif maddubs_tiles or (code == ISA_AVX2 and pack[2] == 1 and SPARSE_AVX2_ROWS == 32):
            # u8 32-row tiles: through vpmaddubsw on the s8 CSR values as stored (7-bit
            # activations, or pair-bounded weights), or widened at load against the int16 values
            pt8 = <uint8_t*>scratch
            vals32 = <const void*>vals if maddubs_tiles else _ptr(pack[0])
            with nogil:
                wb_pack_x_sparse_u8_32(pq, M, Kp, Kb, pt8, nt)
                wb_sparse_avx2_32(pt8, M, Kb, rp, col, vals32, maddubs_tiles, N, e, nt)
        elif code == ISA_AVX2:
            pt16 = <int16_t*>scratch
            pv16 = <const int16_t*>_ptr(pack[0])
            prpc = <const int32_t*>_ptr(pack[1])
            nch = pack[2]
            with nogil:
                wb_pack_x_sparse_s16_avx2(pq, M, Kp, Kb, pt16, nt)
                wb_sparse_avx2(pt16, M, Kb, prpc, nch, col, pv16, N, e, nt)
        else:   # avx512_vnni and amx (no AMX sparse kernel): tiles of 16 * G rows
            G = wb_sparse_vnni_groups(M, Kb)
            pt8 = <uint8_t*>scratch
            with nogil:
                if pq != NULL:   # else forward_into packed them as it quantized
                    wb_pack_x_sparse_vnni(pq, M, Kp, Kb, G, pt8, nt)
                wb_sparse_vnni_g(pt8, M, Kb, G, rp, col, vals, N, e, nt)
        return 0

    cdef int forward_into(self, object x, int M, object y, int act, object xq, object xs, object zp,
                          void *scratch, int nt=0, int col_segments=0, int code=-1) except -1:
        """``_Int8Linear.forward_into``; on AVX-512 VNNI and AMX (whose sparse layers run the VNNI
        kernel) the rows are quantized and packed into the kernel's tiles in one parallel job
        (``_quantize_pack_gemm``)."""
        code = self._resolve_given(code)
        if M == 0 or code < ISA_VNNI:
            return _Int8Linear.forward_into(self, x, M, y, act, xq, xs, zp, scratch, nt, col_segments, code)
        return _quantize_pack_gemm(self, code, self.Kb, wb_sparse_vnni_groups(M, self.Kb), x, M, y, act,
                                   xq, xs, zp, scratch, nt, col_segments)

