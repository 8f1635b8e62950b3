/* LayerNorm over the last dim, optionally of x + bias + residual (workbench_ext.ops and the
 * compiled encoder's layer loop): the portable row (double sums), the AVX2 row (8-lane float sums)
 * and the AVX-512 rows, two at a time, with the AVX2 row's bits. */
#ifndef WB_LAYERNORM_H
#define WB_LAYERNORM_H

#include "wb_common.h"

/* ---------------- LayerNorm over the last dim (optionally of x + bias + residual) ---------------- */
static void wb_ln_row(const float *x, const float *bias, const float *res, const float *g,
                      const float *b, float eps, int H, float *y) {
    /* y first holds the summed input, then the normalised output */
    double s = 0.0;
    for (int h = 0; h < H; h++) {
        float v = x[h];
        if (bias) v += bias[h];
        if (res) v += res[h];
        y[h] = v;
        s += v;
    }
    const float mean = (float)(s / H);
    double ss = 0.0;
    for (int h = 0; h < H; h++) { float d = y[h] - mean; ss += (double)d * d; }
    const float rstd = (float)(1.0 / sqrt(ss / H + (double)eps));
    for (int h = 0; h < H; h++) y[h] = (y[h] - mean) * rstd * g[h] + b[h];
}

/* Same maths as wb_ln_row with 8-lane float partial sums (two accumulators each). */
WB_AVX2 static void wb_ln_row_avx2(const float *x, const float *bias, const float *res, const float *g,
                                   const float *b, float eps, int H, float *y) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int h = 0;
    for (; h + 8 <= H; h += 8) {
        __m256 v = _mm256_loadu_ps(x + h);
        if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + h));
        if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res + h));
        _mm256_storeu_ps(y + h, v);
        if (h & 8) s1 = _mm256_add_ps(s1, v); else s0 = _mm256_add_ps(s0, v);
    }
    float s = wb_hsum_avx2(_mm256_add_ps(s0, s1));
    for (; h < H; h++) {
        float v = x[h];
        if (bias) v += bias[h];
        if (res) v += res[h];
        y[h] = v;
        s += v;
    }
    const float mean = s / (float)H;
    const __m256 vm = _mm256_set1_ps(mean);
    s0 = _mm256_setzero_ps(); s1 = s0;
    for (h = 0; h + 8 <= H; h += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(y + h), vm);
        if (h & 8) s1 = _mm256_fmadd_ps(d, d, s1); else s0 = _mm256_fmadd_ps(d, d, s0);
    }
    float ss = wb_hsum_avx2(_mm256_add_ps(s0, s1));
    for (; h < H; h++) { float d = y[h] - mean; ss += d * d; }
    const float rstd = (float)(1.0 / sqrt((double)ss / H + (double)eps));
    const __m256 vr = _mm256_set1_ps(rstd);
    for (h = 0; h + 8 <= H; h += 8) {
        __m256 d = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(y + h), vm), vr);
        _mm256_storeu_ps(y + h, _mm256_fmadd_ps(d, _mm256_loadu_ps(g + h), _mm256_loadu_ps(b + h)));
    }
    for (; h < H; h++) y[h] = (y[h] - mean) * rstd * g[h] + b[h];
}

/* wb_ln_row_avx2 on NR (1 or 2) rows at once, 16 lanes wide: the same bits. The AVX2 row adds
 * blocks h = 0, 16, 32.. into one 8-lane sum and h = 8, 24.. into the other; a 16-lane sum holds
 * exactly those two in its halves (a last lone block of 8 goes to the low half), and they are
 * reduced as before. Each row's sums are chains of H / 16 dependent adds, so one row at a time
 * waits on their latency; two rows' chains interleave. A batch-1 DistilBERT forward on the
 * Sapphire Rapids-class development machine, this against the AVX2 rows in one process:
 * results/bench/spr-amx/layernorm_ab.txt. */
/* The AVX2 row's sum of its two 8-lane sums, s0 + s1, reduced as it reduces them: here they are
 * the low and high halves of one 16-lane sum. */
WB_AVX512F static inline float wb_ln_sum_halves(__m512 s) {
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1));
    return wb_hsum_avx2(_mm256_add_ps(_mm512_castps512_ps256(s), hi));
}

WB_AVX512F static inline __attribute__((always_inline)) void
wb_ln_rows_avx512(const int NR, const float *const *x, const float *bias, const float *const *res,
                  const float *g, const float *b, float eps, int H, float *const *y) {
    const int H16 = H / 16 * 16, lone8 = H - H16 >= 8;
    const __mmask16 lo = 0x00FF;
    __m512 S[2];
    float mean[2], rstd[2];
    for (int i = 0; i < NR; i++) S[i] = _mm512_setzero_ps();
    for (int h = 0; h < H16; h += 16)
        for (int i = 0; i < NR; i++) {
            __m512 v = _mm512_loadu_ps(x[i] + h);
            if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + h));
            if (res[i]) v = _mm512_add_ps(v, _mm512_loadu_ps(res[i] + h));
            _mm512_storeu_ps(y[i] + h, v);
            S[i] = _mm512_add_ps(S[i], v);
        }
    for (int i = 0; i < NR; i++) {
        if (lone8) {
            __m512 v = _mm512_maskz_loadu_ps(lo, x[i] + H16);
            if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(lo, bias + H16));
            if (res[i]) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(lo, res[i] + H16));
            _mm512_mask_storeu_ps(y[i] + H16, lo, v);
            S[i] = _mm512_mask_add_ps(S[i], lo, S[i], v);
        }
        float s = wb_ln_sum_halves(S[i]);
        for (int h = H16 + 8 * lone8; h < H; h++) {
            float v = x[i][h];
            if (bias) v += bias[h];
            if (res[i]) v += res[i][h];
            y[i][h] = v;
            s += v;
        }
        mean[i] = s / (float)H;
        S[i] = _mm512_setzero_ps();
    }
    for (int h = 0; h < H16; h += 16)
        for (int i = 0; i < NR; i++) {
            const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(y[i] + h), _mm512_set1_ps(mean[i]));
            S[i] = _mm512_fmadd_ps(d, d, S[i]);
        }
    for (int i = 0; i < NR; i++) {
        if (lone8) {
            const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(lo, y[i] + H16), _mm512_set1_ps(mean[i]));
            S[i] = _mm512_mask3_fmadd_ps(d, d, S[i], lo);
        }
        float ss = wb_ln_sum_halves(S[i]);
        for (int h = H16 + 8 * lone8; h < H; h++) { float d = y[i][h] - mean[i]; ss += d * d; }
        rstd[i] = (float)(1.0 / sqrt((double)ss / H + (double)eps));
    }
    for (int i = 0; i < NR; i++) {
        const __m512 vm = _mm512_set1_ps(mean[i]), vr = _mm512_set1_ps(rstd[i]);
        int h = 0;
        for (; h < H16 + 8 * lone8; h += 16) {
            const __mmask16 k = h < H16 ? (__mmask16)0xFFFF : lo;
            const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, y[i] + h), vm), vr);
            _mm512_mask_storeu_ps(y[i] + h, k, _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(k, g + h), _mm512_maskz_loadu_ps(k, b + h)));
        }
        for (h = H16 + 8 * lone8; h < H; h++) y[i][h] = (y[i][h] - mean[i]) * rstd[i] * g[h] + b[h];
    }
}

WB_AVX512F static void wb_ln_row1_avx512(const float *x, const float *bias, const float *res, const float *g,
                                         const float *b, float eps, int H, float *y) {
    wb_ln_rows_avx512(1, &x, bias, &res, g, b, eps, H, &y);
}

WB_AVX512F static void wb_ln_row2_avx512(const float *const *x, const float *bias, const float *const *res,
                                         const float *g, const float *b, float eps, int H, float *const *y) {
    wb_ln_rows_avx512(2, x, bias, res, g, b, eps, H, y);
}

typedef struct {
    const float *x, *bias, *res, *g, *b; float eps; int H; float *y; int isa;
} wb_layernorm_job_t;

/* 1: the AVX2 row function even where the CPU has AVX-512 (the A/B switch,
 * workbench_ext.encoder._set_layernorm_avx2_rows) */
static int wb_ln_avx2_only = 0;

static void wb_layernorm_chunk(void *p, long b, long e) {
    const wb_layernorm_job_t *j = (const wb_layernorm_job_t *)p;
    const size_t H = (size_t)j->H;
    long r = b;
    if (j->isa >= WB_ISA_AVX512_VNNI && !wb_ln_avx2_only) {
        for (; r + 2 <= e; r += 2) {
            const float *x2[2] = {j->x + (size_t)r * H, j->x + (size_t)(r + 1) * H};
            const float *res2[2] = {j->res ? j->res + (size_t)r * H : NULL, j->res ? j->res + (size_t)(r + 1) * H : NULL};
            float *y2[2] = {j->y + (size_t)r * H, j->y + (size_t)(r + 1) * H};
            wb_ln_row2_avx512(x2, j->bias, res2, j->g, j->b, j->eps, j->H, y2);
        }
        if (r < e)
            wb_ln_row1_avx512(j->x + (size_t)r * H, j->bias, j->res ? j->res + (size_t)r * H : NULL,
                              j->g, j->b, j->eps, j->H, j->y + (size_t)r * H);
        return;
    }
    for (; r < e; r++) {
        const float *res = j->res ? j->res + (size_t)r * H : NULL;
        if (j->isa >= WB_ISA_AVX2) wb_ln_row_avx2(j->x + (size_t)r * H, j->bias, res, j->g, j->b, j->eps, j->H, j->y + (size_t)r * H);
        else wb_ln_row(j->x + (size_t)r * H, j->bias, res, j->g, j->b, j->eps, j->H, j->y + (size_t)r * H);
    }
}

static void wb_layernorm(const float *x, const float *bias, const float *res, const float *g,
                         const float *b, float eps, long R, int H, float *y, int isa, int nt) {
    nt = wb_threads(nt);
    wb_layernorm_job_t job = {x, bias, res, g, b, eps, H, y, isa};
    wb_parallel_for(R * H > WB_PAR_MIN ? nt : 1, R, wb_grain(R, nt, 2), wb_layernorm_chunk, &job);
}

#endif
