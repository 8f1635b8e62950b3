/* The int8 dequantize epilogue, shared by every int8 GEMM path. */
#ifndef WB_EPILOGUE_H
#define WB_EPILOGUE_H

#include "wb_gelu.h"

/* ------------------------------------------------------------------------------------------
 * Epilogue shared by every int8 path (so all ISAs give bit-identical floats):
 *   c = acc - zp[m] * wsum[n]                (exact int32: sum_k (q - zp) * w)
 *   y = (float)c * (xscale[m] * wscale[n]) + bias[n]
 * acc is an int32 tile C[r * ldc + j], rows m0.., columns n0...  If yi != NULL the exact
 * integer c is written instead (used by tests / qmatmul).
 * ---------------------------------------------------------------------------------------- */
typedef struct {
    int N;
    const int32_t *wsum;
    const float *wscale;
    const float *bias;    /* never NULL: zeros when the layer has no bias */
    const int32_t *zp;
    const float *xscale;
    float *y;             /* [M][N] */
    int32_t *yi;          /* [M][N] or NULL */
    int act;              /* applied to y after the epilogue: WB_ACT_NONE, or GELU as
                           * workbench_ext.ops.gelu computes it on the ISA in use */
    int col_segments;     /* the order of the work items (wb_epi_item): 0 the kernel's own;
                           * k >= 1 columns outermost, in k interleaved segments */
} wb_epi_t;

/* Output tile (mb, nb) of work item t, of MB row tiles x NB column blocks.
 * col_segments == 0: the kernel's own order, rows outermost (rows_first) or columns outermost.
 * col_segments == k >= 1: columns outermost, and the column blocks taken as k equal segments
 * interleaved block by block (segment 0's first block, segment 1's first, ...), so a thread's
 * contiguous share of the items (the pool's owned ranges, wb_pool_impl.h) covers the same
 * stretch of every segment.  For the fused QKV at batch 1 (k = 3) thread i then computes the
 * Q, K and V columns of the heads that attention gives it, and nothing it wrote crosses to the
 * other core (results/bench/zen4-spread).  Where NB is not a multiple of k: columns outermost. */
static inline void wb_epi_item(const wb_epi_t *e, long t, int MB, int NB, int rows_first, int *mb, int *nb) {
    const int k = e->col_segments;
    if (k == 0 && rows_first) {
        *mb = (int)(t / NB), *nb = (int)(t % NB);
        return;
    }
    const int j = (int)(t / MB);
    *mb = (int)(t % MB);
    *nb = (k > 1 && NB % k == 0) ? (j % k) * (NB / k) + j / k : j;
}

#define WB_ACT_NONE 0
#define WB_ACT_GELU_PORTABLE 1
#define WB_ACT_GELU_AVX2 2
#define WB_ACT_GELU_AVX512 3

/* The fused activation of an output tile (rows m0.., columns n0..), after its epilogue: the
 * tile is still in cache, so GELU costs no extra pass over the [M, N] output. */
static void wb_epi_activation(const wb_epi_t *e, int m0, int mr, int n0, int nr) {
    if (e->act == WB_ACT_NONE || e->yi) return;
    for (int r = 0; r < mr; r++) {
        float *o = e->y + (size_t)(m0 + r) * e->N + n0;
        if (e->act == WB_ACT_GELU_AVX512) wb_gelu_avx512(o, o, (size_t)nr);
        else if (e->act == WB_ACT_GELU_AVX2) wb_gelu_avx2(o, o, (size_t)nr);
        else wb_gelu_portable(o, o, (size_t)nr);
    }
}

static void wb_epilogue(const wb_epi_t *e, const int32_t *C, int ldc, int m0, int mr, int n0, int nr) {
    const int N = e->N;
    for (int r = 0; r < mr; r++) {
        const int m = m0 + r;
        const int32_t z = e->zp[m];
        const int32_t *c = C + (size_t)r * ldc;
        const int32_t *ws = e->wsum + n0;
        if (e->yi) {
            int32_t *o = e->yi + (size_t)m * N + n0;
            for (int j = 0; j < nr; j++) o[j] = c[j] - z * ws[j];
        } else {
            float *o = e->y + (size_t)m * N + n0;
            const float xs = e->xscale[m];
            const float *wsc = e->wscale + n0, *b = e->bias + n0;
            for (int j = 0; j < nr; j++) o[j] = (float)(c[j] - z * ws[j]) * (xs * wsc[j]) + b[j];
        }
    }
}

/* wb_epilogue for a C that is already sum_k (q - zp) w (the AVX2 dense kernel centres its
 * activations), in AVX2 lanes: the same float operations (no FMA), so bit-identical. */
WB_AVX2 static void wb_epilogue_centred_avx2(const wb_epi_t *e, const int32_t *C, int ldc, int m0, int mr, int n0, int nr) {
    const int N = e->N;
    for (int r = 0; r < mr; r++) {
        const int m = m0 + r;
        const int32_t *c = C + (size_t)r * ldc;
        int j = 0;
        if (e->yi) {
            int32_t *o = e->yi + (size_t)m * N + n0;
            for (; j + 8 <= nr; j += 8)
                _mm256_storeu_si256((__m256i *)(o + j), _mm256_loadu_si256((const __m256i *)(c + j)));
            for (; j < nr; j++) o[j] = c[j];
        } else {
            float *o = e->y + (size_t)m * N + n0;
            const float xs = e->xscale[m];
            const __m256 vxs = _mm256_set1_ps(xs);
            const float *wsc = e->wscale + n0, *b = e->bias + n0;
            for (; j + 8 <= nr; j += 8) {
                __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(c + j))),
                                         _mm256_mul_ps(vxs, _mm256_loadu_ps(wsc + j)));
                _mm256_storeu_ps(o + j, _mm256_add_ps(f, _mm256_loadu_ps(b + j)));
            }
            for (; j < nr; j++) o[j] = (float)c[j] * (xs * wsc[j]) + b[j];
        }
    }
}

#endif
