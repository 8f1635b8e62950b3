/* fp32 1x4 block-sparse linear (y = x W^T + b) for workbench_ext.sparse.
 * Weights: CSR of 1x4 blocks along K (row_ptr[N+1], col[nnzb] = k/4, vals[nnzb][4]).
 * Activations are repacked per call into [MB][Kb][8][4] (8-row tiles, zero padded) so one
 * block touches 4 contiguous ymm registers of X (2 rows x 4 k each); the kernel vectorises
 * over rows.  AVX2+FMA is measured on the development machine; portable is plain C.
 */
#ifndef WB_SPARSE_H
#define WB_SPARSE_H

#include "wb_common.h"

#define WB_F_MT 8
#define WB_F_NC 64

typedef struct { const float *x; int M, K, Kb; float *out; } wb_f32_pack_job_t;

static void wb_f32_pack_x_chunk(void *p, long b, long e) {
    const wb_f32_pack_job_t *j = (const wb_f32_pack_job_t *)p;
    for (long mb = b; mb < e; mb++) {
        float *o = j->out + (size_t)mb * j->Kb * WB_F_MT * 4;
        for (int r = 0; r < WB_F_MT; r++) {
            int m = (int)mb * WB_F_MT + r;
            for (int kb = 0; kb < j->Kb; kb++) {
                float *d = o + ((size_t)kb * WB_F_MT + r) * 4;
                for (int t = 0; t < 4; t++) {
                    int k = 4 * kb + t;
                    d[t] = (m < j->M && k < j->K) ? j->x[(size_t)m * j->K + k] : 0.0f;
                }
            }
        }
    }
}

static void wb_f32_pack_x(const float *x, int M, int K, int Kb, float *out, int nt) {
    const int MB = (M + WB_F_MT - 1) / WB_F_MT;
    wb_f32_pack_job_t job = {x, M, K, Kb, out};
    wb_parallel_for((long)M * K > 32768 ? nt : 1, MB, wb_grain(MB, nt, 2), wb_f32_pack_x_chunk, &job);
}

/* items = 8-row tiles x 64-column groups, dynamic chunks of one (sparse rows differ in length) */
typedef struct {
    const float *xt; int M, Kb, NB; const int32_t *rp, *col; const float *vals, *bias; int N; float *y;
} wb_f32_sparse_job_t;

static void wb_f32_sparse_portable_chunk(void *p, long tb, long te) {
    const wb_f32_sparse_job_t *jb = (const wb_f32_sparse_job_t *)p;
    const int N = jb->N;
    const int32_t *rp = jb->rp, *col = jb->col;
    for (long t = tb; t < te; t++) {
        int mb = (int)(t / jb->NB), nb = (int)(t % jb->NB);
        int m0 = mb * WB_F_MT, mr = wb_imin(WB_F_MT, jb->M - m0);
        int n0 = nb * WB_F_NC, nr = wb_imin(WB_F_NC, N - n0);
        const float *X = jb->xt + (size_t)mb * jb->Kb * WB_F_MT * 4;
        for (int j = 0; j < nr; j++) {
            int n = n0 + j;
            float acc[WB_F_MT];
            for (int r = 0; r < WB_F_MT; r++) acc[r] = 0.0f;
            for (int b = rp[n]; b < rp[n + 1]; b++) {
                const float *v = jb->vals + 4 * (size_t)b;
                const float *xb = X + (size_t)col[b] * WB_F_MT * 4;
                for (int r = 0; r < WB_F_MT; r++)
                    acc[r] += xb[4 * r] * v[0] + xb[4 * r + 1] * v[1] + xb[4 * r + 2] * v[2] + xb[4 * r + 3] * v[3];
            }
            for (int r = 0; r < mr; r++) jb->y[(size_t)(m0 + r) * N + n] = acc[r] + jb->bias[n];
        }
    }
}

static void wb_f32_sparse_portable(const float *xt, int M, int Kb, const int32_t *rp, const int32_t *col,
                                   const float *vals, const float *bias, int N, float *y, int nt) {
    const int MB = (M + WB_F_MT - 1) / WB_F_MT, NB = (N + WB_F_NC - 1) / WB_F_NC;
    wb_f32_sparse_job_t job = {xt, M, Kb, NB, rp, col, vals, bias, N, y};
    wb_parallel_for(nt, (long)MB * NB, 1, wb_f32_sparse_portable_chunk, &job);
}

WB_AVX2 static inline __attribute__((always_inline)) __m256
wb_f32_sparse_col_avx2(const float *X, const int32_t *col, const float *vals, int b, const int b1) {
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, e0 = a0, e1 = a0, e2 = a0, e3 = a0;
    for (; b + 2 <= b1; b += 2) {
        const __m256 w = _mm256_broadcast_ps((const __m128 *)(vals + 4 * (size_t)b));
        const __m256 w2 = _mm256_broadcast_ps((const __m128 *)(vals + 4 * (size_t)b + 4));
        const float *x = X + (size_t)col[b] * 32, *x2 = X + (size_t)col[b + 1] * 32;
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x), w, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8), w, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 16), w, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 24), w, a3);
        e0 = _mm256_fmadd_ps(_mm256_loadu_ps(x2), w2, e0);
        e1 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + 8), w2, e1);
        e2 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + 16), w2, e2);
        e3 = _mm256_fmadd_ps(_mm256_loadu_ps(x2 + 24), w2, e3);
    }
    if (b < b1) {
        const __m256 w = _mm256_broadcast_ps((const __m128 *)(vals + 4 * (size_t)b));
        const float *x = X + (size_t)col[b] * 32;
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x), w, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8), w, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 16), w, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 24), w, a3);
    }
    a0 = _mm256_add_ps(a0, e0); a1 = _mm256_add_ps(a1, e1);
    a2 = _mm256_add_ps(a2, e2); a3 = _mm256_add_ps(a3, e3);
    /* a0: r0 k0-3 | r1 k0-3; a1: r2|r3; a2: r4|r5; a3: r6|r7 */
    __m256 h01 = _mm256_hadd_ps(a0, a1);   /* r0a r0b r2a r2b | r1a r1b r3a r3b */
    __m256 h23 = _mm256_hadd_ps(a2, a3);   /* r4a r4b r6a r6b | r5a r5b r7a r7b */
    __m256 h = _mm256_hadd_ps(h01, h23);   /* r0 r2 r4 r6 | r1 r3 r5 r7 */
    return _mm256_permutevar8x32_ps(h, perm); /* r0..r7 */
}

static int wb_f32_pair_cols = 1;

/* Two columns at once (independent accumulators give the ILP), as in the int8 kernel. */
WB_AVX2 static inline __attribute__((always_inline)) void
wb_f32_sparse_col2_avx2(const float *X, const int32_t *col, const float *vals, int b, const int b1,
                        int d, const int d1, __m256 *o0, __m256 *o1) {
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, e0 = a0, e1 = a0, e2 = a0, e3 = a0;
    const int n = wb_imin(b1 - b, d1 - d);
#define WB_FBLK(bb, A0, A1, A2, A3)                                                            \
    {                                                                                         \
        const __m256 w = _mm256_broadcast_ps((const __m128 *)(vals + 4 * (size_t)(bb)));       \
        const float *x = X + (size_t)col[bb] * 32;                                            \
        A0 = _mm256_fmadd_ps(_mm256_loadu_ps(x), w, A0);                                      \
        A1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8), w, A1);                                  \
        A2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 16), w, A2);                                 \
        A3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + 24), w, A3);                                 \
    }
    for (int i = 0; i < n; i++) {
        WB_FBLK(b + i, a0, a1, a2, a3)
        WB_FBLK(d + i, e0, e1, e2, e3)
    }
    for (b += n; b < b1; b++) WB_FBLK(b, a0, a1, a2, a3)
    for (d += n; d < d1; d++) WB_FBLK(d, e0, e1, e2, e3)
#undef WB_FBLK
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    *o0 = _mm256_permutevar8x32_ps(h, perm);
    h = _mm256_hadd_ps(_mm256_hadd_ps(e0, e1), _mm256_hadd_ps(e2, e3));
    *o1 = _mm256_permutevar8x32_ps(h, perm);
}

/* 8 rows x nr columns; groups of 8 columns are transposed in registers so y rows are written
 * with contiguous 8-float stores. */
WB_AVX2 static void wb_f32_sparse_tile_avx2(const float *X, int m0, int mr, int n0, int nr,
                                            const int32_t *rp, const int32_t *col, const float *vals,
                                            const float *bias, int N, float *y) {
    for (int jg = 0; jg < nr; jg += 8) {
        const int nc = wb_imin(8, nr - jg);
        __m256 R[8];
        int jj = 0;
        if (wb_f32_pair_cols) {
            for (; jj + 2 <= nc; jj += 2) {
                const int n = n0 + jg + jj;
                __m256 v0, v1;
                wb_f32_sparse_col2_avx2(X, col, vals, rp[n], rp[n + 1], rp[n + 1], rp[n + 2], &v0, &v1);
                R[jj] = _mm256_add_ps(v0, _mm256_set1_ps(bias[n]));
                R[jj + 1] = _mm256_add_ps(v1, _mm256_set1_ps(bias[n + 1]));
            }
        }
        for (; jj < 8; jj++) {
            if (jj >= nc) { R[jj] = _mm256_setzero_ps(); continue; }
            const int n = n0 + jg + jj;
            R[jj] = _mm256_add_ps(wb_f32_sparse_col_avx2(X, col, vals, rp[n], rp[n + 1]), _mm256_set1_ps(bias[n]));
        }
        wb_store_8x8_t(R, mr, nc, y, (size_t)N, (size_t)m0 * N + n0 + jg);
    }
}

static void wb_f32_sparse_avx2_chunk(void *p, long tb, long te) {
    const wb_f32_sparse_job_t *j = (const wb_f32_sparse_job_t *)p;
    for (long t = tb; t < te; t++) {
        int mb = (int)(t / j->NB), nb = (int)(t % j->NB);
        int m0 = mb * WB_F_MT, mr = wb_imin(WB_F_MT, j->M - m0);
        int n0 = nb * WB_F_NC, nr = wb_imin(WB_F_NC, j->N - n0);
        wb_f32_sparse_tile_avx2(j->xt + (size_t)mb * j->Kb * WB_F_MT * 4, m0, mr, n0, nr, j->rp, j->col,
                                j->vals, j->bias, j->N, j->y);
    }
}

static void wb_f32_sparse_avx2(const float *xt, int M, int Kb, const int32_t *rp, const int32_t *col,
                               const float *vals, const float *bias, int N, float *y, int nt) {
    const int MB = (M + WB_F_MT - 1) / WB_F_MT, NB = (N + WB_F_NC - 1) / WB_F_NC;
    wb_f32_sparse_job_t job = {xt, M, Kb, NB, rp, col, vals, bias, N, y};
    wb_parallel_for(nt, (long)MB * NB, 1, wb_f32_sparse_avx2_chunk, &job);
}

#endif
