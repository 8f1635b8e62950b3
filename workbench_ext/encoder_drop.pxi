# Token dropping between two layers of Int8Encoder.run_layers (included by encoder.pyx).
from libc.math cimport INFINITY
from libc.string cimport memcpy


cdef int _drop_tokens(const float *src, float *dst, const float *sig, const int *off, int *new_off,
                      const int *keep, int B, int nh, int H, float *tot, int *kept) noexcept nogil:
    """Token dropping between two layers (run_layers' keep): each sequence b's keep[b] most
    significant rows of src, in their order, to dst one sequence after another; their positions
    to kept, the new offsets to new_off. The significance of token j: its probabilities summed
    over the heads, head 0 first (sig: sequence b's [nh][n] block at nh * off[b]); [CLS] always
    stays; ties to the lower position (the order of NumPy's stable argsort in
    workbench.runtime.dynamic_forward.select). Returns the number of rows kept."""
    cdef int b, j, i, n, k, rank, w = 0
    cdef size_t at
    cdef float t
    new_off[0] = 0
    for b in range(B):
        n = off[b + 1] - off[b]
        k = keep[b] if keep[b] < n else n
        at = <size_t>off[b] * nh
        for j in range(n):
            t = sig[at + j]
            for i in range(1, nh):
                t = t + sig[at + <size_t>i * n + j]
            tot[j] = t
        tot[0] = INFINITY
        for j in range(n):
            rank = 0
            for i in range(n):
                if tot[i] > tot[j] or (tot[i] == tot[j] and i < j):
                    rank += 1
            if rank < k:
                memcpy(dst + <size_t>w * H, src + <size_t>(off[b] + j) * H, sizeof(float) * H)
                kept[w] = j
                w += 1
        new_off[b + 1] = w
    return w
