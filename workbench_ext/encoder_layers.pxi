# The compiled encoder's layer loop (included by encoder.pyx, after the buffers, drops and ends):
# every op of every layer on the int8 kernels' C entry points, no Python between them.


cdef object _run_layers(list layers, int H, int precision, _Buffers buf, object x, int B, int S, int M,
                        object mask_bias, int isa, object offs, int first, int stop, bint cls_last, object sig,
                        object drops, object chosen):
    """Layers first .. stop-1 on M token rows in all. offs: None (B sequences of S rows, M = B * S,
    mask_bias [B, S]), or int32 [B + 1] offsets of packed sequences (M = offs[B], mask_bias:
    S zeros, S the longest; wb_attn_t.seq_off). cls_last: the last of them computes the [CLS]
    rows only, returned [B, H]; else its M rows. sig: that layer's significance; drops /
    chosen: token dropping between the layers (run_layers)."""
    cdef int i, b, R, rows, nh, d, W, o = 0, c = 0, F, blk, r0, n
    cdef const int *off = <const int*>_ptr(offs) if offs is not None else NULL
    cdef int[:, ::1] keep_counts = drops
    cdef int *kept = <int*>_ptr(chosen) if drops is not None else NULL
    cdef float *drop_sig = NULL
    cdef float *tot = NULL
    cdef int *new_off = NULL
    if drops is not None:   # each drop's significance, totals and offsets (rows only shrink)
        drop_buf = np.empty(max(l["heads"] for l in layers[first:stop]) * M + S, np.float32)
        drop_sig, tot = _fp(drop_buf), _fp(drop_buf) + <size_t>(drop_buf.size - S)
        offs = offs.copy()
        off = <const int*>_ptr(offs)
        next_offs = np.empty(B + 1, np.int32)
        new_off = <int*>_ptr(next_offs)
    cdef int nt = wb_threads(0)
    cdef wb_attn_t a
    cdef float eps1, eps2
    cdef float *res
    cdef float *px
    cdef float *pa
    cdef float *pbo
    cdef float *pg1
    cdef float *pb1
    cdef float *ph1
    cdef float *pf2
    cdef float *pb2o
    cdef float *pg2
    cdef float *pb2
    cdef float *po
    cdef float *pr
    cdef float *pdst
    for i in range(first, stop):
        layer = layers[i]
        last = cls_last and i == stop - 1
        R = 1 if last else S          # query rows per sequence (packed: R == S means all)
        rows = B if last else M
        nh, d = layer["heads"], layer["head_dim"]
        W = 3 * nh * d
        # At batch 1 attention splits the heads between the threads, and the kernels split
        # rows: the QKV then hands each thread its heads' columns instead, so the Q, K, V a
        # thread reads in attention are the ones it wrote (no cache lines cross cores)
        _linear(buf, layer["qkv"], M, x, buf.qkv, 0, isa, 3 if B == 1 and _qkv_by_heads else 0)
        a.q = <const float*>_ptr(buf.qkv)
        a.qb, a.qh, a.qr = <long>S * W, d, W
        a.k = a.q + nh * d
        a.kb, a.kh, a.kd, a.ks = <long>S * W, d, 1, W
        a.v = a.q + 2 * nh * d
        a.vb, a.vh, a.vs = <long>S * W, d, W
        a.mask = <const float*>_ptr(mask_bias)
        a.ctx = <float*>_ptr(buf.ctx)
        a.B, a.nh, a.R, a.S, a.d = B, nh, R, S, d
        a.sig = _fp(sig) if sig is not None and i == stop - 1 else NULL
        if drops is not None and i < stop - 1:
            a.sig = drop_sig
        a.precision = precision
        a.seq_off = off
        with nogil:
            if wb_attention(&a, isa, nt) != 0:
                with gil:
                    raise MemoryError("attention: could not allocate per-thread scratch memory")
        _linear(buf, layer["out"], rows, buf.ctx, buf.attn, 0, isa)
        px = <float*>_ptr(x)
        if last:                      # the residual of the [CLS] rows
            res = <float*>_ptr(buf.res)
            for b in range(B):
                memcpy(res + <size_t>b * H, px + <size_t>(off[b] if off != NULL else b * S) * H,
                       sizeof(float) * H)
        else:
            res = px
        g1, b1, eps1 = layer["ln1"]
        g2, b2, eps2 = layer["ln2"]
        pa, pbo, pg1, pb1, ph1 = _fp(buf.attn), _fp(layer["out_bias"]), _fp(g1), _fp(b1), _fp(buf.h1)
        with nogil:
            wb_layernorm(pa, pbo, res, pg1, pb1, eps1, rows, H, ph1, isa, nt)
        out = buf.outs[o]
        F = _pick(layer["ffn1"], rows).N
        blk = _ffn_block_rows if 0 < _ffn_block_rows < rows else rows
        for r0 in range(0, rows, blk):  # one block: all rows unless _set_ffn_block_rows
            n = min(blk, rows - r0)
            h1v, f1v, f2v = ((buf.h1, buf.f1, buf.f2) if r0 == 0 else
                             (buf.h1[r0 * H:], buf.f1[r0 * F:], buf.f2[r0 * H:]))
            _linear(buf, layer["ffn1"], n, h1v, f1v, 1, isa)
            _linear(buf, layer["ffn2"], n, f1v, f2v, 0, isa)
            pf2, pb2o, pg2, pb2 = _fp(f2v), _fp(layer["ffn2_bias"]), _fp(g2), _fp(b2)
            pr, po = ph1 + <size_t>r0 * H, _fp(out) + <size_t>r0 * H
            with nogil:
                wb_layernorm(pf2, pb2o, pr, pg2, pb2, eps2, n, H, po, isa, nt)
        po = _fp(out)
        x, o = out, o ^ 1
        if drops is not None and i < stop - 1:   # into the other buffer; the next layer writes this one
            pdst = _fp(buf.outs[o])
            with nogil:
                c += _drop_tokens(po, pdst, drop_sig, off, new_off, &keep_counts[i - first, 0],
                                  B, nh, H, tot, kept + c)
            memcpy(<int*>off, new_off, sizeof(int) * (B + 1))
            M, S = off[B], 0
            for b in range(B):
                S = max(S, off[b + 1] - off[b])
            x, o = buf.outs[o], o ^ 1
    return np.array(x[:B * H].reshape(B, H)) if cls_last else np.array(x[:M * H].reshape(M, H))
