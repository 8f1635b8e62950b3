/* 1x4 block-sparse int8 GEMM: the portable kernel and the AVX2 kernel on 16-row int16 activation
 * tiles (the 32-row u8 tiles: wb_int8_sparse_avx2_32.h). */
#ifndef WB_INT8_SPARSE_AVX2_H
#define WB_INT8_SPARSE_AVX2_H

#include "wb_epilogue.h"

/* ========================================================================================
 * 1x4 block-sparse.  Work item = 16 rows (an m-tile) x up to 64 output columns; results are
 * gathered into C[16][64] and sent through the shared epilogue.
 * ====================================================================================== */
#define WB_SP_MT 16
#define WB_SP_NC 64

/* The arguments of a sparse GEMM's item loop (items = MB row tiles x NB column groups, dynamic
 * chunks of one: rows of a sparse weight differ in length) and of an activation packing loop
 * (items = row tiles); each kernel reads the fields it has. */
typedef struct {
    const void *x; int M, Kp, Kb, G, MB, NB;
    const int32_t *rp; int nch; const int32_t *col; const void *vals; int N; const wb_epi_t *e;
} wb_sparse_job_t;

typedef struct { const uint8_t *xq; int M, Kp, Kb, G; void *out; } wb_pack_job_t;

static void wb_sparse_portable_chunk(void *p, long tb, long te) {
    const wb_sparse_job_t *j = (const wb_sparse_job_t *)p;
    const uint8_t *xq = (const uint8_t *)j->x;
    const int32_t *rp = j->rp, *col = j->col;
    const int8_t *vals = (const int8_t *)j->vals;
    for (long t = tb; t < te; t++) {
        int mb, nb;
        wb_epi_item(j->e, t, j->MB, j->NB, 1, &mb, &nb);
        int m0 = mb * WB_SP_MT, mr = wb_imin(WB_SP_MT, j->M - m0);
        int n0 = nb * WB_SP_NC, nr = wb_imin(WB_SP_NC, j->N - n0);
        int32_t C[WB_SP_MT * WB_SP_NC];
        for (int r = 0; r < mr; r++) {
            const uint8_t *a = xq + (size_t)(m0 + r) * j->Kp;
            for (int jj = 0; jj < nr; jj++) {
                int n = n0 + jj;
                int32_t acc = 0;
                for (int b = rp[n]; b < rp[n + 1]; b++) {
                    const uint8_t *x = a + 4 * (size_t)col[b];
                    const int8_t *v = vals + 4 * (size_t)b;
                    acc += x[0] * v[0] + x[1] * v[1] + x[2] * v[2] + x[3] * v[3];
                }
                C[r * WB_SP_NC + jj] = acc;
            }
        }
        wb_epilogue(j->e, C, WB_SP_NC, m0, mr, n0, nr);
        wb_epi_activation(j->e, m0, mr, n0, nr);
    }
}

static void wb_sparse_portable(const uint8_t *xq, int M, int Kp, const int32_t *rp,
                               const int32_t *col, const int8_t *vals, int N,
                               const wb_epi_t *e, int nt) {
    const int MB = (M + WB_SP_MT - 1) / WB_SP_MT, NB = (N + WB_SP_NC - 1) / WB_SP_NC;
    wb_sparse_job_t job = {xq, M, Kp, 0, 1, MB, NB, rp, 0, col, vals, N, e};
    wb_parallel_for(nt, (long)MB * NB, 1, wb_sparse_portable_chunk, &job);
}

/* Activations for the VNNI sparse kernel: u8 [MB][Kb][16][4]. */

/* AVX2: one output column n for 16 rows.  Each ymm of X holds 4 rows x 4 k (s16); vpmaddwd with
 * the broadcast 4 weights gives 2 partial sums per row, reduced with hadd at the end.
 * Returns rows 0-7 in *lo and rows 8-15 in *hi. */
WB_AVX2 static inline __attribute__((always_inline)) void
wb_avx2_sparse_col(const int16_t *Xt, const int32_t *col, const int16_t *vals16,
                   int b, const int b1, __m256i *lo, __m256i *hi) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    __m256i e0 = a0, e1 = a0, e2 = a0, e3 = a0;
    for (; b + 2 <= b1; b += 2) {
        int64_t wv, wv2;
        memcpy(&wv, vals16 + 4 * (size_t)b, 8);
        memcpy(&wv2, vals16 + 4 * (size_t)b + 4, 8);
        const __m256i w = _mm256_set1_epi64x(wv), w2 = _mm256_set1_epi64x(wv2);
        const int16_t *x = Xt + (size_t)col[b] * 64, *x2 = Xt + (size_t)col[b + 1] * 64;
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x)), w));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 16)), w));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 32)), w));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 48)), w));
        e0 = _mm256_add_epi32(e0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x2)), w2));
        e1 = _mm256_add_epi32(e1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x2 + 16)), w2));
        e2 = _mm256_add_epi32(e2, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x2 + 32)), w2));
        e3 = _mm256_add_epi32(e3, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x2 + 48)), w2));
    }
    if (b < b1) {
        int64_t wv;
        memcpy(&wv, vals16 + 4 * (size_t)b, 8);
        const __m256i w = _mm256_set1_epi64x(wv);
        const int16_t *x = Xt + (size_t)col[b] * 64;
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x)), w));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 16)), w));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 32)), w));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 48)), w));
    }
    a0 = _mm256_add_epi32(a0, e0); a1 = _mm256_add_epi32(a1, e1);
    a2 = _mm256_add_epi32(a2, e2); a3 = _mm256_add_epi32(a3, e3);
    /* a0 lanes: r0p0 r0p1 r1p0 r1p1 | r2p0 r2p1 r3p0 r3p1 (rows 0-3), a1 rows 4-7, ... */
    *lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a0, a1), 0xD8);  /* rows 0..7 */
    *hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a2, a3), 0xD8);  /* rows 8..15 */
}

/* Two columns at once (independent accumulator sets give the ILP): one loop over the common
 * length, then the longer column's tail -- halves the unpredictable loop exits per column. */
static int wb_sparse_pair_cols = 1;

WB_AVX2 static inline __attribute__((always_inline)) void
wb_avx2_sparse_col2(const int16_t *Xt, const int32_t *col, const int16_t *vals16,
                    int b, const int b1, int d, const int d1, __m256i *out /* lo0 hi0 lo1 hi1 */) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    __m256i e0 = a0, e1 = a0, e2 = a0, e3 = a0;
    const int n = wb_imin(b1 - b, d1 - d);
#define WB_BLK(bb, A0, A1, A2, A3)                                                             \
    {                                                                                         \
        int64_t wv; memcpy(&wv, vals16 + 4 * (size_t)(bb), 8);                                \
        const __m256i w = _mm256_set1_epi64x(wv);                                             \
        const int16_t *x = Xt + (size_t)col[bb] * 64;                                         \
        A0 = _mm256_add_epi32(A0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x)), w));      \
        A1 = _mm256_add_epi32(A1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 16)), w)); \
        A2 = _mm256_add_epi32(A2, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 32)), w)); \
        A3 = _mm256_add_epi32(A3, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 48)), w)); \
    }
    for (int i = 0; i < n; i++) {
        WB_BLK(b + i, a0, a1, a2, a3)
        WB_BLK(d + i, e0, e1, e2, e3)
    }
    for (b += n; b < b1; b++) WB_BLK(b, a0, a1, a2, a3)
    for (d += n; d < d1; d++) WB_BLK(d, e0, e1, e2, e3)
#undef WB_BLK
    out[0] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a0, a1), 0xD8);
    out[1] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a2, a3), 0xD8);
    out[2] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(e0, e1), 0xD8);
    out[3] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(e2, e3), 0xD8);
}

/* AVX2 sparse work item: rows m0..m0+15 (mr valid), columns n0..n0+nr-1.
 * K is processed in nch chunks (rpc[n * (nch + 1) + c] = first block of row n in chunk c) so the
 * 16-row activation slab of one chunk (<= 24 KB) stays in L1; per-column partial sums go to
 * Cacc.  Epilogue fused in registers (same float operations as wb_epilogue, so bit-identical),
 * then 8x8 transposes so the output rows are written contiguously. */
WB_AVX2 static void wb_avx2_sparse_tile(const int16_t *Xt, int m0, int mr, int n0, int nr,
                                        const int32_t *rpc, int nch, const int32_t *col,
                                        const int16_t *vals16, const wb_epi_t *e) {
    int32_t Cacc[WB_SP_NC * 16] __attribute__((aligned(32)));
    for (int c = 0; c < nch; c++) {
        int jj = 0;
        if (wb_sparse_pair_cols) {
            for (; jj + 2 <= nr; jj += 2) {
                const int32_t *r0 = rpc + (size_t)(n0 + jj) * (nch + 1) + c, *r1 = r0 + (nch + 1);
                __m256i v[4];
                wb_avx2_sparse_col2(Xt, col, vals16, r0[0], r0[1], r1[0], r1[1], v);
                __m256i *dst = (__m256i *)(Cacc + jj * 16);
                for (int i = 0; i < 4; i++) {
                    if (c) v[i] = _mm256_add_epi32(v[i], _mm256_load_si256(dst + i));
                    _mm256_store_si256(dst + i, v[i]);
                }
            }
        }
        for (; jj < nr; jj++) {
            const int32_t *rr = rpc + (size_t)(n0 + jj) * (nch + 1) + c;
            __m256i lo, hi;
            wb_avx2_sparse_col(Xt, col, vals16, rr[0], rr[1], &lo, &hi);
            __m256i *dst = (__m256i *)(Cacc + jj * 16);
            if (c) {
                lo = _mm256_add_epi32(lo, _mm256_load_si256(dst));
                hi = _mm256_add_epi32(hi, _mm256_load_si256(dst + 1));
            }
            _mm256_store_si256(dst, lo);
            _mm256_store_si256(dst + 1, hi);
        }
    }
    int32_t zpl[16];
    float xsl[16];
    for (int r = 0; r < 16; r++) {
        zpl[r] = r < mr ? e->zp[m0 + r] : 0;
        xsl[r] = r < mr ? e->xscale[m0 + r] : 0.0f;
    }
    const __m256i zp0 = _mm256_loadu_si256((const __m256i *)zpl), zp1 = _mm256_loadu_si256((const __m256i *)(zpl + 8));
    const __m256 xs0 = _mm256_loadu_ps(xsl), xs1 = _mm256_loadu_ps(xsl + 8);
    const int N = e->N;
    for (int jg = 0; jg < nr; jg += 8) {
        const int nc = wb_imin(8, nr - jg);
        __m256 R0[8], R1[8];
        for (int jj = 0; jj < 8; jj++) {
            if (jj >= nc) { R0[jj] = _mm256_setzero_ps(); R1[jj] = R0[jj]; continue; }
            const int n = n0 + jg + jj;
            __m256i lo = _mm256_load_si256((const __m256i *)(Cacc + (jg + jj) * 16));
            __m256i hi = _mm256_load_si256((const __m256i *)(Cacc + (jg + jj) * 16 + 8));
            const __m256i ws = _mm256_set1_epi32(e->wsum[n]);
            lo = _mm256_sub_epi32(lo, _mm256_mullo_epi32(zp0, ws));
            hi = _mm256_sub_epi32(hi, _mm256_mullo_epi32(zp1, ws));
            if (e->yi) {
                R0[jj] = _mm256_castsi256_ps(lo);
                R1[jj] = _mm256_castsi256_ps(hi);
            } else {
                const __m256 wsc = _mm256_set1_ps(e->wscale[n]), bb = _mm256_set1_ps(e->bias[n]);
                R0[jj] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(xs0, wsc)), bb);
                R1[jj] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(xs1, wsc)), bb);
            }
        }
        void *out = e->yi ? (void *)e->yi : (void *)e->y;
        wb_store_8x8_t(R0, mr, nc, out, (size_t)N, (size_t)m0 * N + n0 + jg);
        if (mr > 8) wb_store_8x8_t(R1, mr - 8, nc, out, (size_t)N, (size_t)(m0 + 8) * N + n0 + jg);
    }
}

static void wb_sparse_avx2_chunk(void *p, long tb, long te) {
    const wb_sparse_job_t *j = (const wb_sparse_job_t *)p;
    for (long t = tb; t < te; t++) {
        int mb, nb;
        wb_epi_item(j->e, t, j->MB, j->NB, 1, &mb, &nb);
        int m0 = mb * WB_SP_MT, mr = wb_imin(WB_SP_MT, j->M - m0);
        int n0 = nb * WB_SP_NC, nr = wb_imin(WB_SP_NC, j->N - n0);
        wb_avx2_sparse_tile((const int16_t *)j->x + (size_t)mb * j->Kb * WB_SP_MT * 4, m0, mr, n0, nr,
                            j->rp, j->nch, j->col, (const int16_t *)j->vals, j->e);
        wb_epi_activation(j->e, m0, mr, n0, nr);
    }
}

static void wb_sparse_avx2(const int16_t *xt, int M, int Kb, const int32_t *rpc, int nch,
                           const int32_t *col, const int16_t *vals16, int N, const wb_epi_t *e, int nt) {
    const int MB = (M + WB_SP_MT - 1) / WB_SP_MT, NB = (N + WB_SP_NC - 1) / WB_SP_NC;
    wb_sparse_job_t job = {xt, M, 0, Kb, 1, MB, NB, rpc, nch, col, vals16, N, e};
    wb_parallel_for(nt, (long)MB * NB, 1, wb_sparse_avx2_chunk, &job);
}

/* Activations for the AVX2 16-row sparse kernel: s16 [MB][Kb][16][4] (rows >= M are zero). */
WB_AVX2 static void wb_pack_x_sparse_s16_avx2_mb(const uint8_t *xq, int M, int Kp, int Kb, int mb, int16_t *o) {
    for (int r = 0; r < WB_SP_MT; r++) {
        const int m = mb * WB_SP_MT + r;
        int16_t *d = o + (size_t)r * 4;
        int kb = 0;
        if (m < M) {
            const uint8_t *a = xq + (size_t)m * Kp;
            for (; kb + 4 <= Kb; kb += 4) {
                __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(a + 4 * kb)));
                __m128i l = _mm256_castsi256_si128(v), h = _mm256_extracti128_si256(v, 1);
                _mm_storel_epi64((__m128i *)(d + (size_t)(kb + 0) * WB_SP_MT * 4), l);
                _mm_storeh_pd((double *)(d + (size_t)(kb + 1) * WB_SP_MT * 4), _mm_castsi128_pd(l));
                _mm_storel_epi64((__m128i *)(d + (size_t)(kb + 2) * WB_SP_MT * 4), h);
                _mm_storeh_pd((double *)(d + (size_t)(kb + 3) * WB_SP_MT * 4), _mm_castsi128_pd(h));
            }
            for (; kb < Kb; kb++) {
                int16_t *q = d + (size_t)kb * WB_SP_MT * 4;
                q[0] = a[4 * kb]; q[1] = a[4 * kb + 1]; q[2] = a[4 * kb + 2]; q[3] = a[4 * kb + 3];
            }
        } else {
            for (; kb < Kb; kb++) memset(d + (size_t)kb * WB_SP_MT * 4, 0, 8);
        }
    }
}

static void wb_pack_x_sparse_s16_avx2_chunk(void *p, long b, long e) {
    const wb_pack_job_t *j = (const wb_pack_job_t *)p;
    for (long mb = b; mb < e; mb++)
        wb_pack_x_sparse_s16_avx2_mb(j->xq, j->M, j->Kp, j->Kb, (int)mb,
                                     (int16_t *)j->out + (size_t)mb * j->Kb * WB_SP_MT * 4);
}

static void wb_pack_x_sparse_s16_avx2(const uint8_t *xq, int M, int Kp, int Kb, int16_t *out, int nt) {
    const int MB = (M + WB_SP_MT - 1) / WB_SP_MT;
    wb_pack_job_t job = {xq, M, Kp, Kb, 1, out};
    wb_parallel_for((long)M * Kb > 16384 ? nt : 1, MB, wb_grain(MB, nt, 2), wb_pack_x_sparse_s16_avx2_chunk, &job);
}

/* ---- AVX-512 VNNI sparse: tiles of MT = 16 * G rows (G = 1..4 zmm per column), activations
 * u8 [MB][Kb][MT][4] (64 * G bytes per 1x4 block, rows >= M zero).  Per stored block: one
 * broadcast of its 4 weights, G loads of X and G vpdpbusd (16 rows x 4 k each); two output
 * columns at a time (2 * G independent accumulator chains).  The int32 column sums go to a
 * column-major tile Ct[j][64]; the epilogue (zero-point, scales, bias: the same float operations
 * as wb_epilogue, so bit-identical) runs over rows in AVX2 lanes and is stored with 8x8
 * transposes (wb_sparse_colmajor_epilogue). */

#endif
