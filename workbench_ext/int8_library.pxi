# Included by int8.pyx (one module, split by job): the int8 layer whose s32 GEMM is a library
# kernel -- torch's ``_int_mm`` (oneDNN, on whichever path it picks) -- with this module's
# quantization and epilogue around it, so its outputs are the dense kernel's bits.

cdef extern from "wb_int8_library.h" nogil:
    void wb_u8_to_s8(const uint8_t *q, size_t n, int8_t *out)
    void wb_zp_minus_128(const int32_t *zp, int M, int32_t *out)
    void wb_epilogue_matrix(const wb_epi_t *e, const int32_t *C, int M, int code, int nt)


cdef object _torch = None


cdef object _torch_module():
    """torch, imported on the first library layer (the other layers never need it)."""
    global _torch
    if _torch is None:
        import torch
        _torch = torch
    return _torch


def library_int8_available():
    """Whether torch's ``_int_mm`` (s8 x s8 -> s32) runs on this CPU and build: it is the GEMM of
    ``LibraryInt8Linear``. An error message (str) when it does not, else None."""
    try:
        torch = _torch_module()
        a = torch.ones((1, 64), dtype=torch.int8)
        out = torch._int_mm(a, torch.ones((64, 8), dtype=torch.int8))
    except Exception as exc:  # no torch, or no CPU kernel in this build
        return f"torch._int_mm does not run here ({type(exc).__name__}: {exc})"
    if int(out[0, 0]) != 64:
        return f"torch._int_mm gave {int(out[0, 0])} for 64 products of 1"
    return None


cdef class LibraryInt8Linear(_Int8Linear):
    """Int8 linear on a library GEMM: ``LibraryInt8Linear(w_s8 int8[N, K], w_scale float32[N],
    bias float32[N] | None)``, the same arguments and outputs as ``DenseInt8Linear``.

    The activations are quantized by this module (per token, as every int8 layer), shifted to
    s8 (``q - 128``), multiplied by torch's ``_int_mm`` (oneDNN's exact s8 x s8 -> s32 GEMM; the
    weights are kept as a column-major [Kp, N] view of ``w_s8``, no copy)
    and dequantized by the shared epilogue with zero point ``zp - 128``: the s32 sums, and so
    the outputs, are bit-identical to the dense kernel's on every ISA. The epilogue (and fused
    GELU) runs as a second pass over the [M, N] sums on the kernels' pool, where the own kernels
    run it on each tile while it is in cache. torch's thread count is set to the layer's for the
    call and restored after.

    It exists as a candidate of the engines' per-layer kernel choice
    (``workbench.runtime.choice``: kept only where it is measured faster than the dense kernel),
    so a CPU on which oneDNN beats this module's kernels (e.g. a newer AMX core) runs oneDNN
    there without any change to the outputs."""

    cdef object _make_pack(self, int code):
        torch = _torch_module()
        cdef int N = self.N, K = self.K, Kp = self.Kp
        w = aligned_zeros((N, Kp), np.int8)
        w[:, :K] = self.w_s8
        # [Kp, N] with strides (1, Kp): the transposed weights without a copy (_int_mm ran about as
        # fast on them as on a row-major copy: 0.717 / 0.712 ms at 128 x 768 x 3072, 0.74 /
        # 0.70 at 128 x 3072 x 768, best of 40 alternating calls, 2 threads, Zen 4)
        return torch.from_numpy(w).t()

    cdef int _run(self, int code, object pack, object xq, int M, wb_epi_t *e, int nt, void *scratch) except -1:
        torch = _torch_module()
        cdef int N = self.N, Kp = self.Kp
        xs8 = aligned_bytes(<Py_ssize_t>M * Kp).view(np.int8).reshape(M, Kp)
        acc = aligned_bytes(<Py_ssize_t>M * N * 4).view(np.int32).reshape(M, N)
        zp = np.empty(M, np.int32)
        cdef const uint8_t *pq = <const uint8_t*>_ptr(xq)
        cdef int8_t *ps8 = <int8_t*>_ptr(xs8)
        cdef const int32_t *pacc = <const int32_t*>_ptr(acc)
        cdef int32_t *pzp = <int32_t*>_ptr(zp)
        with nogil:
            wb_u8_to_s8(pq, <size_t>M * Kp, ps8)
            wb_zp_minus_128(e.zp, M, pzp)
        previous = torch.get_num_threads()
        if previous != nt:
            torch.set_num_threads(nt)
        try:
            torch._int_mm(torch.from_numpy(xs8), pack, out=torch.from_numpy(acc))
        finally:
            if previous != nt:
                torch.set_num_threads(previous)
        cdef wb_epi_t shifted = e[0]
        shifted.zp = pzp
        with nogil:
            wb_epilogue_matrix(&shifted, pacc, M, code, nt)
        return 0
