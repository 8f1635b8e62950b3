/* 1x4 block-sparse int8 GEMM on AVX2, 32-row tiles: u8 activations [MB32][Kb][32][4], either
 * widened at load against int16 weights, or multiplied directly by vpmaddubsw ("u7": 7-bit
 * activations, or 8-bit ones against pair-bounded weights, where its pair sums cannot saturate). */
#ifndef WB_INT8_SPARSE_AVX2_32_H
#define WB_INT8_SPARSE_AVX2_32_H

#include "wb_int8_sparse_avx2.h"

/* ---- 8-bit activations: u8 32-row slabs (128 B per block, 24 KB for K = 768) widened with
 * vpmovzxbw at load.  It halves the per-(column, tile) cost of 16-row tiles but spends an
 * instruction per load on widening; on Zen 3 the 16-row kernel is faster, so this one runs only
 * with int8.SPARSE_AVX2_ROWS = 32. */
#define WB_SP_MT32 32

WB_AVX2 static inline __attribute__((always_inline)) void
wb_avx2_sparse_col32(const uint8_t *Xt, const int32_t *col, const int16_t *vals16, int b, const int b1,
                     __m256i *out /* [4]: rows 0-7, 8-15, 16-23, 24-31 */) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (; b < b1; b++) {
        int64_t wv;
        memcpy(&wv, vals16 + 4 * (size_t)b, 8);
        const __m256i w = _mm256_set1_epi64x(wv);
        const uint8_t *x = Xt + (size_t)col[b] * 128;
#define WB_S32(i, acc) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x + 16 * i))), w));
        WB_S32(0, a0) WB_S32(1, a1) WB_S32(2, a2) WB_S32(3, a3)
        WB_S32(4, a4) WB_S32(5, a5) WB_S32(6, a6) WB_S32(7, a7)
#undef WB_S32
    }
    out[0] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a0, a1), 0xD8);
    out[1] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a2, a3), 0xD8);
    out[2] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a4, a5), 0xD8);
    out[3] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a6, a7), 0xD8);
}

/* The same 32 rows, two columns at once (blocks b..b1-1 and d..d1-1; d == d1 for one column),
 * for 7-bit activations (q in [0, 127], act_bits=7), or 8-bit ones against pair-bounded weights
 * (|w[2j]| + |w[2j+1]| <= 128 for each block's pairs (0, 1) and (2, 3)): vpmaddubsw multiplies the
 * u8 activations by a block's 4 s8 weights directly (pair sums lie in [-32512, 32258], or
 * [-32640, 32640], so it cannot saturate) and
 * vpmaddwd against ones adds each row's two pairs: 3 instructions per 8 rows x 4 k and no
 * widening, against 3 (vpmovzxbw, vpmaddwd, vpaddd) per 4 rows x 4 k above; each lane already
 * holds one row's sum, so no hadd at the end.  One loop over the two columns' common length,
 * then the longer one's tail: independent accumulators, one unpredictable loop exit per pair. */
WB_AVX2 static inline __attribute__((always_inline)) void
wb_avx2_sparse_col32_u7(const uint8_t *Xt, const int32_t *col, const int8_t *vals8, int b, const int b1,
                        int d, const int d1, __m256i *out /* [8]: column 0 rows 0-31, column 1 */) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, e0 = a0, e1 = a0, e2 = a0, e3 = a0;
#define WB_U7BLK(bb, A0, A1, A2, A3)                                                              \
    {                                                                                         \
        int32_t wv; memcpy(&wv, vals8 + 4 * (size_t)(bb), 4);                                 \
        const __m256i w = _mm256_set1_epi32(wv);                                              \
        const __m256i *x = (const __m256i *)(Xt + (size_t)col[bb] * 128);                     \
        A0 = _mm256_add_epi32(A0, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_loadu_si256(x), w), ones));     \
        A1 = _mm256_add_epi32(A1, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_loadu_si256(x + 1), w), ones)); \
        A2 = _mm256_add_epi32(A2, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_loadu_si256(x + 2), w), ones)); \
        A3 = _mm256_add_epi32(A3, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_loadu_si256(x + 3), w), ones)); \
    }
    const int n = wb_imin(b1 - b, d1 - d);
    for (int i = 0; i < n; i++) {
        WB_U7BLK(b + i, a0, a1, a2, a3)
        WB_U7BLK(d + i, e0, e1, e2, e3)
    }
    for (b += n; b < b1; b++) WB_U7BLK(b, a0, a1, a2, a3)
    for (d += n; d < d1; d++) WB_U7BLK(d, e0, e1, e2, e3)
#undef WB_U7BLK
    out[0] = a0; out[1] = a1; out[2] = a2; out[3] = a3;
    out[4] = e0; out[5] = e1; out[6] = e2; out[7] = e3;
}
/* u7: the block values are the s8 CSR values, multiplied by vpmaddubsw (wb_avx2_sparse_col32_u7);
 * else int16 values (wb_avx2_sparse_col32).  Inlined with a constant u7 per caller. */
WB_AVX2 static inline __attribute__((always_inline)) void
wb_avx2_sparse32_tile(const uint8_t *Xt, int m0, int mr, int n0, int nr, const int32_t *rp,
                      const int32_t *col, const void *vals, const int u7, const wb_epi_t *e) {
    int32_t zpl[32];
    float xsl[32];
    for (int r = 0; r < 32; r++) {
        zpl[r] = r < mr ? e->zp[m0 + r] : 0;
        xsl[r] = r < mr ? e->xscale[m0 + r] : 0.0f;
    }
    const int N = e->N;
    void *outp = e->yi ? (void *)e->yi : (void *)e->y;
    for (int jg = 0; jg < nr; jg += 8) {
        const int nc = wb_imin(8, nr - jg);
        __m256 R[4][8];
        __m256i vp[8];   /* u7: the sums of columns jj and jj + 1, computed at even jj */
        for (int jj = 0; jj < 8; jj++) {
            if (jj >= nc) { for (int g = 0; g < 4; g++) R[g][jj] = _mm256_setzero_ps(); continue; }
            const int n = n0 + jg + jj;
            __m256i v[4];
            if (u7 && (jj & 1) == 0) {   /* the last column of an odd count pairs with none */
                const int d1 = jj + 1 < nc ? rp[n + 2] : rp[n + 1];
                wb_avx2_sparse_col32_u7(Xt, col, (const int8_t *)vals, rp[n], rp[n + 1], rp[n + 1], d1, vp);
            }
            if (u7) for (int g = 0; g < 4; g++) v[g] = vp[4 * (jj & 1) + g];
            else wb_avx2_sparse_col32(Xt, col, (const int16_t *)vals, rp[n], rp[n + 1], v);
            const __m256i ws = _mm256_set1_epi32(e->wsum[n]);
            const __m256 wsc = _mm256_set1_ps(e->wscale[n]), bb = _mm256_set1_ps(e->bias[n]);
            for (int g = 0; g < 4; g++) {
                __m256i c = _mm256_sub_epi32(v[g], _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(zpl + 8 * g)), ws));
                if (e->yi) R[g][jj] = _mm256_castsi256_ps(c);
                else R[g][jj] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(c), _mm256_mul_ps(_mm256_loadu_ps(xsl + 8 * g), wsc)), bb);
            }
        }
        for (int g = 0; g < 4 && 8 * g < mr; g++)
            wb_store_8x8_t(R[g], mr - 8 * g, nc, outp, (size_t)N, (size_t)(m0 + 8 * g) * N + n0 + jg);
    }
}

static void wb_pack_x_sparse_u8_32_chunk(void *p, long b, long e) {
    const wb_pack_job_t *j = (const wb_pack_job_t *)p;
    for (long mb = b; mb < e; mb++) {
        uint8_t *o = (uint8_t *)j->out + (size_t)mb * j->Kb * WB_SP_MT32 * 4;
        for (int r = 0; r < WB_SP_MT32; r++) {
            int m = (int)mb * WB_SP_MT32 + r;
            for (int kb = 0; kb < j->Kb; kb++) {
                uint8_t *d = o + ((size_t)kb * WB_SP_MT32 + r) * 4;
                if (m < j->M) memcpy(d, j->xq + (size_t)m * j->Kp + 4 * (size_t)kb, 4);
                else memset(d, 0, 4);
            }
        }
    }
}

static void wb_pack_x_sparse_u8_32(const uint8_t *xq, int M, int Kp, int Kb, uint8_t *out, int nt) {
    const int MB = (M + WB_SP_MT32 - 1) / WB_SP_MT32;
    wb_pack_job_t job = {xq, M, Kp, Kb, 1, out};
    wb_parallel_for((long)M * Kb > 16384 ? nt : 1, MB, wb_grain(MB, nt, 2), wb_pack_x_sparse_u8_32_chunk, &job);
}

#define WB_SPARSE_AVX2_32_CHUNK(NAME, U7)                                                     \
WB_AVX2 static void NAME(void *p, long tb, long te) {                                     \
    const wb_sparse_job_t *j = (const wb_sparse_job_t *)p;                                    \
    for (long t = tb; t < te; t++) {                                                          \
        int mb, nb;                                                                           \
        wb_epi_item(j->e, t, j->MB, j->NB, 1, &mb, &nb);                                      \
        int m0 = mb * WB_SP_MT32, mr = wb_imin(WB_SP_MT32, j->M - m0);                        \
        int n0 = nb * WB_SP_NC, nr = wb_imin(WB_SP_NC, j->N - n0);                            \
        wb_avx2_sparse32_tile((const uint8_t *)j->x + (size_t)mb * j->Kb * WB_SP_MT32 * 4,    \
                              m0, mr, n0, nr, j->rp, j->col, j->vals, U7, j->e);              \
        wb_epi_activation(j->e, m0, mr, n0, nr);                                              \
    }                                                                                         \
}
WB_SPARSE_AVX2_32_CHUNK(wb_sparse_avx2_32_chunk, 0)
WB_SPARSE_AVX2_32_CHUNK(wb_sparse_avx2_32_u7_chunk, 1)
/* vals: the int16 block values (widened activations) or, with u7, the s8 CSR values (vpmaddubsw:
 * 7-bit activations, or pair-bounded weights). */
static void wb_sparse_avx2_32(const uint8_t *xt, int M, int Kb, const int32_t *rp, const int32_t *col,
                              const void *vals, int u7, int N, const wb_epi_t *e, int nt) {
    const int MB = (M + WB_SP_MT32 - 1) / WB_SP_MT32, NB = (N + WB_SP_NC - 1) / WB_SP_NC;
    wb_sparse_job_t job = {xt, M, 0, Kb, 1, MB, NB, rp, 0, col, vals, N, e};
    wb_parallel_for(nt, (long)MB * NB, 1, u7 ? wb_sparse_avx2_32_u7_chunk : wb_sparse_avx2_32_chunk, &job);
}

#endif
