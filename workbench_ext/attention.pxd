# The fused attention kernel's C interface (wb_attn.h, which includes wb_ops.h), shared by
# workbench_ext.attention and workbench_ext.encoder.
cdef extern from "wb_attn.h" nogil:
    ctypedef struct wb_attn_t:
        const float *q
        long qb, qh, qr
        const float *k
        long kb, kh, kd, ks
        const float *v
        long vb, vh, vs
        const float *mask
        float *ctx
        int B, nh, R, S, d
        float *sig
        int precision
        const int *seq_off
    int wb_threads(int nt)
    int wb_attention(const wb_attn_t *a, int isa, int nt)
    int wb_attn_bf16_usable(int isa)
    int wb_attn_int8_usable(int isa)
    void wb_layernorm(const float *x, const float *bias, const float *res, const float *g, const float *b,
                      float eps, long R, int H, float *y, int isa, int nt)
    int wb_ln_avx2_only
