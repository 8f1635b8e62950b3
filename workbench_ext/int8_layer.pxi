# Included by int8.pyx (one module, split by job): what the dense, block-sparse and tile-sparse
# int8 layers share -- weight checks, per-ISA packs made on first use, activation quantization,
# output buffers and the call path that hands each layer's kernel its epilogue.

cdef class _Int8Linear:
    """Shared parts of the dense and block-sparse int8 layers (see the module docstring;
    attributes and C methods are declared in int8.pxd)."""

    def __init__(self, w_s8, w_scale, bias=None, isa=None, act_bits=8):
        N, K = check_weight(w_s8, "w_s8", np.int8, bias)
        if act_bits not in (7, 8):
            raise ValueError(f"act_bits must be 7 or 8, got {act_bits!r}")
        if K > MAX_K:
            raise ValueError(f"w_s8: K={K} exceeds {MAX_K} (int32 accumulation would overflow)")
        check_array(w_scale, "w_scale", np.float32, 1)
        if w_scale.shape[0] != N:
            raise ValueError(f"w_scale must have shape ({N},) to match w_s8 {tuple(w_s8.shape)}, got {tuple(w_scale.shape)}")
        self.N = N
        self.K = K
        self.Kp = (K + 63) // 64 * 64
        # 7: activations are quantized onto [0, 127] per token, which the AVX2 dense path
        # multiplies exactly with vpmaddubsw (wb_int8_dense_avx2_u7.h); every ISA gives the
        # same bits for them, as for 8-bit ones
        self.act_bits = act_bits
        self.w_s8 = w_s8.copy()
        # every k-pair (2j, 2j+1) of every row has |w[2j]| + |w[2j+1]| <= 128: then u8 x s8
        # vpmaddubsw pair sums of full-range 8-bit activations stay within 255 * 128 = 32640 and the
        # AVX2 u8 kernels are exact for them (`quantize_weight_per_channel(pair_bounded=True)`
        # makes such weights)
        self.pair_bounded = _pairs_within(self.w_s8, PAIR_BOUND)
        self._u8_exact = act_bits == 7 or self.pair_bounded
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
        extra += ", act_bits=7" if self.act_bits == 7 else ", pair_bounded" if self.pair_bounded else ""
        return f"{type(self).__name__}(N={self.N}, K={self.K}{extra}, isa={self.isa!r})"

    @property
    def isa(self):
        """The ISA path the weights are currently packed for (the one the next call uses
        unless cpu.set_isa / $WORKBENCH_ISA changes in between)."""
        return _ISA_NAMES[self._packed]

    def _packed_arrays(self):
        """The NumPy arrays of the weights packed for the current ISA (tests check their
        alignment)."""
        pack = self._get_pack(self._resolve())
        items = pack if isinstance(pack, tuple) else (pack,)
        return [a for a in items if isinstance(a, np.ndarray)]

    cdef int _resolve(self) except -1:
        name = self._fixed_isa if self._fixed_isa is not None else _cpu.active_isa()
        return _cpu.ISA_CODES[name]

    cdef int _resolve_given(self, int code) except -1:
        """``code``, the ISA a caller resolved for a whole forward (workbench_ext.encoder: a call
        into the cpu module per Linear, between kernels that have just emptied the caches, took a
        few microseconds), unless this layer's ISA is fixed; ``code`` < 0: ``_resolve()``."""
        return code if code >= 0 and self._fixed_isa is None else self._resolve()

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
                   object yi=None, int act=0, void *scratch=NULL, int col_segments=0) except -1:
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
        e.col_segments = col_segments
        return self._run(code, pack, xq, M, &e, nt, scratch)

    cdef int forward_into(self, object x, int M, object y, int act, object xq, object xs, object zp,
                          void *scratch, int nt=0, int col_segments=0, int code=-1) except -1:
        """The layer into caller-owned buffers, without checks or allocations (``__call__``
        and workbench_ext.encoder size them): x float32 [>= M, K] and y float32 [>= M, N]
        C-contiguous, xq uint8 [>= round16(M) * Kp], xs float32 [>= M], zp int32 [>= M],
        scratch >= scratch_bytes(M, Kp) bytes (NULL: the kernel allocates), nt threads (0: the
        default, capped to the problem size), col_segments the order of the kernel's work items
        (wb_epi_item in wb_epilogue.h: 0 the kernel's own; k >= 1 columns outermost in k
        interleaved segments); the outputs are the same either way. code: the ISA the caller
        resolved for its whole forward (``_resolve_given``; -1: resolve it here)."""
        if M == 0:
            return 0
        if nt <= 0:
            nt = self._threads(None, M)
        code = self._resolve_given(code)
        cdef const float *px = <const float*>_ptr(x)
        cdef uint8_t *pq = <uint8_t*>_ptr(xq)
        cdef float *ps = <float*>_ptr(xs)
        cdef int32_t *pz = <int32_t*>_ptr(zp)
        cdef int K = self.K, Kp = self.Kp
        cdef int Mp = (M + 15) // 16 * 16
        with nogil:
            wb_quantize_rows(px, M, K, Kp, pq, ps, pz, code, nt, 127 if self.act_bits == 7 else 255)
            if Mp > M:
                memset(pq + <size_t>M * Kp, 0, <size_t>(Mp - M) * Kp)
        return self._gemm(code, xq, M, y, zp, xs, nt, None, act, scratch, col_segments)

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

    def _forward_in_order(self, x, int col_segments, num_threads=None):
        """Tests: ``self(x)`` with the kernel's work items in the order of ``col_segments``
        (``forward_into``; workbench_ext.encoder uses 3 for the fused QKV at batch 1)."""
        y = self._output(x, None)
        y.fill(np.nan)            # a tile no work item computes shows
        cdef int M = x.shape[0]
        if M:
            self.forward_into(x, M, y, 0, _empty((M + 15) // 16 * 16, self.Kp, cnp.NPY_UINT8),
                              _empty1(M, cnp.NPY_FLOAT32), _empty1(M, cnp.NPY_INT32), NULL,
                              self._threads(num_threads, M), col_segments)
        return y

    def static(self, x, input_scale, input_zero_point, num_threads=None, out=None, activation=None):
        """y = layer with a static (calibrated) activation grid: every row of x float32[M, K] is
        quantized with the same ``input_scale`` / ``input_zero_point`` (u8 asymmetric, as
        ``workbench_ext.ops.quantize_static``) instead of its own range; then the same exact s32
        GEMM and fused epilogue as ``__call__`` (``y = (acc - zp * wsum) * (scale * w_scale) + bias``,
        then ``activation``)."""
        if self.act_bits != 8:
            raise ValueError("static(): a static activation grid is 8-bit; this layer was built with "
                             f"act_bits={self.act_bits} (use act_bits=8 for static quantization)")
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
        if self.act_bits == 7 and q.size and int(q.max()) > 127:
            raise ValueError(f"q: values up to {int(q.max())}, but this layer has act_bits=7 (q in [0, 127])")
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


cdef int _quantize_pack_gemm(_Int8Linear layer, int code, int Kb, int G, object x, int M, object y, int act,
                             object xq, object xs, object zp, void *scratch, int nt, int col_segments) except -1:
    """``forward_into`` of a layer whose AVX-512 kernel reads its activations packed as
    WB_PACK_X_SPARSE_VNNI packs them (Kb 4-byte blocks, 16 * G-row tiles) into ``scratch``: the
    rows are quantized and packed in one parallel job (wb_quant_pack_sparse_vnni: the same bytes
    as quantizing, then packing), and the kernel runs on the packed rows (``xq`` None)."""
    if nt <= 0:
        nt = layer._threads(None, M)
    if scratch == NULL:
        xt = aligned_bytes(scratch_bytes(M, layer.Kp))
        scratch = _ptr(xt)
    cdef int K = layer.K, Kp = layer.Kp
    cdef int qmax = 127 if layer.act_bits == 7 else 255
    cdef const float *px = <const float*>_ptr(x)
    cdef uint8_t *pq = <uint8_t*>_ptr(xq)
    cdef float *ps = <float*>_ptr(xs)
    cdef int32_t *pz = <int32_t*>_ptr(zp)
    with nogil:
        wb_quant_pack_sparse_vnni(px, M, K, Kp, Kb, G, pq, ps, pz, <uint8_t*>scratch, code, nt, qmax)
    return layer._gemm(code, None, M, y, zp, xs, nt, None, act, scratch, col_segments)
