/* Fused float32 element-wise / row-wise ops for workbench_ext.ops.
 * Row loops run on the thread pool (wb_pool.h) for large inputs; inner loops are AVX2 where that is cheap
 * (gelu via a vectorised erf, softmax max/sum via a vectorised exp), portable C otherwise.
 */
#ifndef WB_OPS_H
#define WB_OPS_H

#include "wb_quant.h"
#include "wb_gelu.h"

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

#include "wb_layernorm.h"   /* LayerNorm over the last dim (of x + bias + residual) */

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
