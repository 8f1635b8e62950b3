/* Fused float32 element-wise / row-wise ops for workbench_ext.ops.
 * Row loops run on the thread pool (wb_pool.h) for large inputs; inner loops are AVX2 where that is cheap
 * (gelu via a vectorised erf, softmax max/sum via a vectorised exp), portable C otherwise.
 */
#ifndef WB_OPS_H
#define WB_OPS_H

#include "wb_quant.h"
#include "wb_gelu.h"

#define WB_PAR_MIN 32768L

/* ---------------- GELU (erf form): 0.5 x (1 + erf(x / sqrt 2)) ---------------- */
/* wb_gelu_portable / wb_gelu_avx2 live in wb_common.h (the int8 epilogue fuses them too) */

typedef struct { const float *x; float *y; size_t n, ch; int isa; } wb_gelu_job_t;

static void wb_gelu_chunk(void *p, long b, long e) {
    const wb_gelu_job_t *j = (const wb_gelu_job_t *)p;
    const size_t s = (size_t)b * j->ch, end = (size_t)e * j->ch < j->n ? (size_t)e * j->ch : j->n;
    if (j->isa >= WB_ISA_AVX512_VNNI) wb_gelu_avx512(j->x + s, j->y + s, end - s);
    else if (j->isa >= WB_ISA_AVX2) wb_gelu_avx2(j->x + s, j->y + s, end - s);
    else wb_gelu_portable(j->x + s, j->y + s, end - s);
}

static void wb_gelu(const float *x, float *y, size_t n, int isa, int nt) {
    nt = wb_threads(nt);
    wb_gelu_job_t job = {x, y, n, 16384, isa};    /* chunks of 16384 values */
    wb_parallel_for((long)n > WB_PAR_MIN ? nt : 1, (long)((n + job.ch - 1) / job.ch), 1, wb_gelu_chunk, &job);
}

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

WB_AVX2 static float wb_hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
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
        const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(S[i]), 1));
        float s = wb_hsum_avx2(_mm256_add_ps(_mm512_castps512_ps256(S[i]), hi));
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
        const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(S[i]), 1));
        float ss = wb_hsum_avx2(_mm256_add_ps(_mm512_castps512_ps256(S[i]), hi));
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

/* ---------------- tanh (the classifier heads' pooler) ---------------- */
/* libm tanhf value by value: a head's input is [batch, hidden], too small to vectorise or split.
 * One function for workbench_ext.ops.tanh and the compiled encoder's head, so the whole-forward
 * call and the per-op path give the same bits. */
static void wb_tanh(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
}

/* ---------------- softmax over the last dim (max-subtracted) ---------------- */
static void wb_softmax_row(const float *x, int H, float *y) {
    float mx = -INFINITY;
    for (int h = 0; h < H; h++) mx = x[h] > mx ? x[h] : mx;
    if (mx == -INFINITY) mx = 0.0f;   /* all -inf row: avoid inf - inf */
    float s = 0.0f;
    for (int h = 0; h < H; h++) { float e = expf(x[h] - mx); y[h] = e; s += e; }
    const float inv = 1.0f / s;
    for (int h = 0; h < H; h++) y[h] *= inv;
}

/* exp(x) for x <= 0 (softmax inputs after max subtraction; also fine for x up to 88):
 * Cephes-style range reduction x = n ln2 + r, degree-6 polynomial, 2^n via the exponent bits.
 * Relative error ~2 ulp; inputs below -87.3 flush to 0. */
WB_AVX2 static inline __m256 wb_exp_avx2(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f), hi = _mm256_set1_ps(88.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, p);
}

WB_AVX2 static void wb_softmax_row_avx2(const float *x, int H, float *y) {
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int h = 0;
    for (; h + 8 <= H; h += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + h));
    float mx_a[8];
    _mm256_storeu_ps(mx_a, vm);
    float mx = -INFINITY;
    for (int i = 0; i < 8; i++) mx = mx_a[i] > mx ? mx_a[i] : mx;
    for (; h < H; h++) mx = x[h] > mx ? x[h] : mx;
    if (mx == -INFINITY) mx = 0.0f;
    vm = _mm256_set1_ps(mx);
    __m256 vs = _mm256_setzero_ps();
    for (h = 0; h + 8 <= H; h += 8) {
        __m256 e = wb_exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + h), vm));
        _mm256_storeu_ps(y + h, e);
        vs = _mm256_add_ps(vs, e);
    }
    float s = wb_hsum_avx2(vs);
    for (; h < H; h++) { float e = expf(x[h] - mx); y[h] = e; s += e; }
    const __m256 vi = _mm256_set1_ps(1.0f / s);
    for (h = 0; h + 8 <= H; h += 8) _mm256_storeu_ps(y + h, _mm256_mul_ps(_mm256_loadu_ps(y + h), vi));
    const float inv = 1.0f / s;
    for (; h < H; h++) y[h] *= inv;
}

/* wb_exp_avx2's operations on 16 lanes (round, convert and shift are exact; the rest are
 * lane-wise IEEE operations): the same values. */
WB_AVX512F static inline __m512 wb_exp_avx512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.3f), hi = _mm512_set1_ps(88.3f);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    p = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
    return _mm512_maskz_mov_ps((__mmask16)~under, p);
}

/* wb_softmax_row_avx2 with the exponentials 16 at a time: the same elements get the vector exp
 * (whole 8-blocks) or expf (the tail), and the sum runs the AVX2 loop over the stored values in
 * its order, so the result is bit-identical at about half the cost (the exp dominates). */
WB_AVX512F static void wb_softmax_row_avx512(const float *x, int H, float *y) {
    __m512 vm16 = _mm512_set1_ps(-INFINITY);
    int h = 0;
    for (; h + 16 <= H; h += 16) vm16 = _mm512_max_ps(vm16, _mm512_loadu_ps(x + h));
    float mx = _mm512_reduce_max_ps(vm16);
    for (; h < H; h++) mx = x[h] > mx ? x[h] : mx;
    if (mx == -INFINITY) mx = 0.0f;
    const __m512 vm = _mm512_set1_ps(mx);
    const int H8 = H / 8 * 8;
    for (h = 0; h + 16 <= H8; h += 16)
        _mm512_storeu_ps(y + h, wb_exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + h), vm)));
    if (h < H8) _mm256_storeu_ps(y + h, wb_exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + h), _mm256_set1_ps(mx))));
    __m256 vs = _mm256_setzero_ps();
    for (h = 0; h < H8; h += 8) vs = _mm256_add_ps(vs, _mm256_loadu_ps(y + h));
    float s = wb_hsum_avx2(vs);
    for (h = H8; h < H; h++) { float e = expf(x[h] - mx); y[h] = e; s += e; }
    const __m512 vi = _mm512_set1_ps(1.0f / s);
    for (h = 0; h + 16 <= H8; h += 16) _mm512_storeu_ps(y + h, _mm512_mul_ps(_mm512_loadu_ps(y + h), vi));
    if (h < H8) _mm256_storeu_ps(y + h, _mm256_mul_ps(_mm256_loadu_ps(y + h), _mm256_set1_ps(1.0f / s)));
    const float inv = 1.0f / s;
    for (h = H8; h < H; h++) y[h] *= inv;
}

typedef struct { const float *x; int H; float *y; int isa; } wb_softmax_job_t;

static void wb_softmax_chunk(void *p, long b, long e) {
    const wb_softmax_job_t *j = (const wb_softmax_job_t *)p;
    const size_t H = (size_t)j->H;
    for (long r = b; r < e; r++) {
        if (j->isa >= WB_ISA_AVX512_VNNI) wb_softmax_row_avx512(j->x + r * H, j->H, j->y + r * H);
        else if (j->isa >= WB_ISA_AVX2) wb_softmax_row_avx2(j->x + r * H, j->H, j->y + r * H);
        else wb_softmax_row(j->x + r * H, j->H, j->y + r * H);
    }
}

static void wb_softmax(const float *x, long R, int H, float *y, int isa, int nt) {
    nt = wb_threads(nt);
    wb_softmax_job_t job = {x, H, y, isa};
    wb_parallel_for(R * H > WB_PAR_MIN ? nt : 1, R, wb_grain(R, nt, 2), wb_softmax_chunk, &job);
}

/* ---------------- static (per-tensor) u8 quantization ---------------- */
typedef struct { const float *x; size_t n, ch; float inv, zpf; uint8_t *q; int isa; } wb_quantize_static_job_t;

static void wb_quantize_static_chunk(void *p, long b, long e) {
    const wb_quantize_static_job_t *j = (const wb_quantize_static_job_t *)p;
    const size_t s = (size_t)b * j->ch, end = (size_t)e * j->ch < j->n ? (size_t)e * j->ch : j->n;
    wb_quant_apply(j->isa, j->x + s, end - s, j->inv, j->zpf, 255.0f, j->q + s);
}

static void wb_quantize_static(const float *x, size_t n, float scale, int32_t zp, uint8_t *q, int isa, int nt) {
    nt = wb_threads(nt);
    wb_quantize_static_job_t job = {x, n, 16384, 1.0f / scale, (float)zp, q, isa};   /* chunks of 16384 values */
    wb_parallel_for((long)n > WB_PAR_MIN ? nt : 1, (long)((n + job.ch - 1) / job.ch), 1, wb_quantize_static_chunk, &job);
}

#endif
