# The compiled encoder's buffers and its Linears' calls (included by encoder.pyx, after _ptr / _fp).


cdef object _aligned(Py_ssize_t n, object dtype):
    """n elements of dtype, starting on a 64-byte boundary (int8.aligned_bytes)."""
    return aligned_bytes(n * np.dtype(dtype).itemsize).view(dtype)


cdef class _Buffers:
    """Every intermediate of one forward of up to B sequences and M token rows, sized for the
    widest layer.

    The quantized rows (``xq``) and packed row tiles (``scratch``) get one buffer per input width
    Kp of the Linears: in a buffer of one width, row m sits at the same bytes for every Linear
    that uses it, so the pool thread that owns row m (wb_pool_impl.h) writes the same cache lines
    every time. In one buffer shared by all widths a row's bytes moved with Kp, and a thread wrote
    lines the other core had written last (costly where the two cores sit on different dies:
    results/bench/zen4-spread)."""
    cdef readonly int B, M
    cdef object qkv, ctx, attn, h1, f1, f2, res, xs, zp, tokens
    cdef dict xq, scratch
    cdef list outs

    def __init__(self, int B, int M, int H, int max_qkv, int max_ctx, int max_ffn, tuple kps):
        """Room for up to B sequences of M token rows in all (B * S, or their packed total)."""
        self.B, self.M = B, M
        self.qkv = _aligned(M * max_qkv, np.float32)
        self.ctx = _aligned(M * max_ctx, np.float32)
        self.attn = _aligned(M * H, np.float32)
        self.h1 = _aligned(M * H, np.float32)
        self.f1 = _aligned(M * max_ffn, np.float32)
        self.f2 = _aligned(M * H, np.float32)
        self.res = _aligned(<Py_ssize_t>B * H, np.float32)
        self.outs = [_aligned(M * H, np.float32), _aligned(M * H, np.float32)]
        self.xq = {kp: _aligned((M + 15) // 16 * 16 * kp, np.uint8) for kp in kps}
        self.xs = _aligned(M, np.float32)
        self.zp = _aligned(M, np.int32)
        self.tokens = _aligned(3 * M, np.int64)   # the rows' ids, positions, token types (classify)
        self.scratch = {kp: _aligned(scratch_bytes(<int>M, kp), np.uint8) for kp in kps}


cdef bint _qkv_by_heads = True


def _set_qkv_by_heads(bint on):
    """Experiment switch: at batch 1, 1 (the default) has the fused QKV's kernel hand each thread
    the Q, K and V columns of the heads attention gives it (col_segments 3); 0 leaves the kernel's
    own order. The same outputs either way. Returns the previous value."""
    global _qkv_by_heads
    previous = _qkv_by_heads
    _qkv_by_heads = on
    return previous


cdef int _ffn_block_rows = 0


def _set_ffn_block_rows(int rows):
    """Experiment switch: 0 (the default) runs a layer's FFN input, FFN output and LayerNorm each
    on all its rows; n > 0 runs the three on n rows at a time, so the FFN's wide intermediate
    rows (the FFN width x 4 bytes each) stay in the cores' L2 between the two Linears instead of
    passing through L3 at large batches. The same outputs either way (every kernel is per row).
    Returns the previous value."""
    global _ffn_block_rows
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    previous = _ffn_block_rows
    _ffn_block_rows = rows
    return previous


def _set_layernorm_avx2_rows(bint on):
    """Experiment switch: 1 runs the layer loop's LayerNorms on the AVX2 row function, one row at
    a time, where the CPU has AVX-512; 0 (the default) on the AVX-512 one, two rows at a time.
    The same bits either way (tests/test_kernel_ops.py). Returns the previous value."""
    global wb_ln_avx2_only
    previous = wb_ln_avx2_only
    wb_ln_avx2_only = on
    return bool(previous)


cdef _Int8Linear _pick(list parts, int rows):
    """The kernel of a Linear for this many rows: the last part whose from_rows <= rows."""
    cdef Py_ssize_t i = len(parts) - 1
    while i > 0 and rows < parts[i][0]:
        i -= 1
    return <_Int8Linear>parts[i][1]


cdef int _linear(_Buffers buf, list parts, int rows, object x, object y, int act, int isa=-1,
                 int col_segments=0) except -1:
    """y[:rows] = the Linear picked for `rows` on x[:rows] (act 1: GELU) on ISA code `isa` (the
    forward's; -1: the layer resolves it), with the buffers of its input width; col_segments:
    the order of its kernel's work items (forward_into)."""
    cdef _Int8Linear lin = _pick(parts, rows)
    return lin.forward_into(x, rows, y, act, buf.xq[lin.Kp], buf.xs, buf.zp, _ptr(buf.scratch[lin.Kp]),
                            0, col_segments, isa)
