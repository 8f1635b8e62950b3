/* Per-token u8 quantization of activations (every int8 path and workbench_ext.ops). */
#ifndef WB_QUANT_H
#define WB_QUANT_H

#include "wb_common.h"

/* ------------------------------------------------------------------------------------------
 * Per-token asymmetric u8 quantization onto [0, qmax] (qmax 255: 8-bit; 127: the opt-in 7-bit
 * activations, which the AVX2 u7 kernel multiplies with vpmaddubsw without saturating).
 *   lo = min(0, min x), hi = max(0, max x), scale = (hi - lo) / qmax (all-zero row: scale 1),
 *   zp = clamp(rint(-lo / scale), 0, qmax), q = clamp(rint(x * (1/scale)) + zp, 0, qmax)
 * The scalar, AVX2 and AVX-512 versions perform the same IEEE operations on every element (no
 * FMA contraction: the build uses -std=c11, i.e. -ffp-contract=off), so they give identical
 * bytes; tests rely on that. (The range's min / max come out the same in any order: NaNs are
 * skipped by every version, and a -0 / +0 tie becomes 0 in wb_qparams.)
 * ---------------------------------------------------------------------------------------- */
static inline void wb_qparams(float lo, float hi, float qmax, float *scale, int32_t *zp, float *inv) {
    lo = lo < 0.0f ? lo : 0.0f;
    hi = hi > 0.0f ? hi : 0.0f;
    float s = (hi - lo) / qmax;
    if (!(s > 0.0f) || !isfinite(s)) {
        *scale = 1.0f; *zp = 0; *inv = 1.0f;
        return;
    }
    float z = rintf(-lo / s);
    z = z > 0.0f ? z : 0.0f;
    z = z < qmax ? z : qmax;
    *scale = s; *zp = (int32_t)z; *inv = 1.0f / s;
}

static inline uint8_t wb_q1(float x, float inv, float zpf, float qmax) {
    float v = rintf(x * inv) + zpf;
    v = v > 0.0f ? v : 0.0f;          /* NaN -> 0, same as _mm256_max_ps(v, 0) */
    v = v < qmax ? v : qmax;          /* rint(x/s) + rint(-lo/s) can reach qmax + 1 */
    return (uint8_t)(int)v;
}

/* A row's range from its vector part (lo, hi: the least and greatest of x[0..k) and 0) and its
 * scalar tail x[k..K), then its scale and zero point; returns 1/scale. Every version's row
 * function ends here, so they agree on the parameters. */
static inline float wb_quant_row_params(float lo, float hi, const float *x, int k, int K, float qmax,
                                        float *scale, int32_t *zp) {
    float inv;
    for (; k < K; k++) { float v = x[k]; lo = v < lo ? v : lo; hi = v > hi ? v : hi; }
    wb_qparams(lo, hi, qmax, scale, zp, &inv);
    return inv;
}

static void wb_quant_row_portable(const float *x, int K, int Kp, float qmax, uint8_t *q, float *scale, int32_t *zp) {
    const float inv = wb_quant_row_params(0.0f, 0.0f, x, 0, K, qmax, scale, zp), zpf = (float)*zp;
    for (int k = 0; k < K; k++) q[k] = wb_q1(x[k], inv, zpf, qmax);
    for (int k = K; k < Kp; k++) q[k] = 0;
}

/* q[i] = clamp(rint(x[i] * inv) + zpf, 0, qmax): same operations as wb_q1, 16 at a time. */
WB_AVX2 static void wb_quant_apply_avx2(const float *x, size_t n, float inv, float zpf, float qmax, uint8_t *q) {
    const __m256 vinv = _mm256_set1_ps(inv), vzp = _mm256_set1_ps(zpf);
    const __m256 v0 = _mm256_setzero_ps(), v255 = _mm256_set1_ps(qmax);
    size_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m256 a = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + k), vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 b = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8), vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        a = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(a, vzp), v0), v255);
        b = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(b, vzp), v0), v255);
        __m256i ia = _mm256_cvtps_epi32(a), ib = _mm256_cvtps_epi32(b);
        __m256i p16 = _mm256_packus_epi32(ia, ib);             /* lanes: a0-3 b0-3 | a4-7 b4-7 */
        p16 = _mm256_permute4x64_epi64(p16, 0xD8);              /* a0-7 | b0-7 */
        __m128i p8 = _mm_packus_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
        _mm_storeu_si128((__m128i *)(q + k), p8);
    }
    for (; k < n; k++) q[k] = wb_q1(x[k], inv, zpf, qmax);
}

/* One row: the range's vector part (4 x LANES lanes of type V), wb_quant_row_params, then APPLY;
 * pad columns zero. Defined once per width below. Four running minima / maxima, not one: a min
 * waits for the previous one (4 cycles), so one pair spent 4 cycles per vector where the loads
 * allow 1 (perf on a Sapphire Rapids-class core: the range took 45 % of quantizing 128 x 3072);
 * the lanes' order does not change a min or a max. */
#define WB_QUANT_ROW(NAME, TARGET, V, LANES, ZERO, LOAD, MIN, MAX, REDMIN, REDMAX, APPLY)                    \
TARGET static void NAME(const float *x, int K, int Kp, float qmax, uint8_t *q, float *scale, int32_t *zp) { \
    V lo0 = ZERO(), hi0 = ZERO(), lo1 = lo0, hi1 = lo0, lo2 = lo0, hi2 = lo0, lo3 = lo0, hi3 = lo0; \
    int k = 0;                                                                                  \
    for (; k + 4 * LANES <= K; k += 4 * LANES) {                                                \
        const V v0 = LOAD(x + k), v1 = LOAD(x + k + LANES);                                     \
        const V v2 = LOAD(x + k + 2 * LANES), v3 = LOAD(x + k + 3 * LANES);                     \
        lo0 = MIN(v0, lo0); hi0 = MAX(v0, hi0);   /* NaN in v -> keeps lo, like the scalar compare */ \
        lo1 = MIN(v1, lo1); hi1 = MAX(v1, hi1);                                                 \
        lo2 = MIN(v2, lo2); hi2 = MAX(v2, hi2);                                                 \
        lo3 = MIN(v3, lo3); hi3 = MAX(v3, hi3);                                                 \
    }                                                                                           \
    for (; k + LANES <= K; k += LANES) {                                                        \
        const V v = LOAD(x + k);                                                                \
        lo0 = MIN(v, lo0);                                                                      \
        hi0 = MAX(v, hi0);                                                                      \
    }                                                                                           \
    /* the accumulators hold no NaN (a NaN never replaces one), so they combine in any order */ \
    lo0 = MIN(MIN(lo0, lo1), MIN(lo2, lo3));                                                    \
    hi0 = MAX(MAX(hi0, hi1), MAX(hi2, hi3));                                                    \
    /* across the lanes in registers: a scalar loop over the stored lanes waited on the stores \
     * (perf: a fifth of quantizing 128 x 3072, Sapphire Rapids-class) */                       \
    const float inv = wb_quant_row_params(REDMIN(lo0), REDMAX(hi0), x, k, K, qmax, scale, zp);  \
    APPLY(x, (size_t)K, inv, (float)*zp, qmax, q);                                              \
    for (k = K; k < Kp; k++) q[k] = 0;                                                          \
}
/* the least / greatest of a vector's 8 lanes (none NaN) */
WB_AVX2 static inline float wb_hmin256(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps(m, m, 1)));
}
WB_AVX2 static inline float wb_hmax256(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}
WB_QUANT_ROW(wb_quant_row_avx2, WB_AVX2, __m256, 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_min_ps,
             _mm256_max_ps, wb_hmin256, wb_hmax256, wb_quant_apply_avx2)

#ifndef WB_EMULATE_ISA   /* testing/emulate_isa.c stands in its own __m512i: not for this code */
/* The AVX2 versions' operations, 16 at a time: half the instructions on AVX-512 machines (Zen 4,
 * 2 threads: 1.20x / 1.27x at 128 x 768 / 128 x 3072; results/bench/zen4-spread/README.md). */
WB_AVX512F static void wb_quant_apply_avx512(const float *x, size_t n, float inv, float zpf, float qmax, uint8_t *q) {
    const __m512 vinv = _mm512_set1_ps(inv), vzp = _mm512_set1_ps(zpf);
    const __m512 v0 = _mm512_setzero_ps(), vmax = _mm512_set1_ps(qmax);
    size_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512 a = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + k), vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        a = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(a, vzp), v0), vmax);   /* NaN -> 0 as max(v, 0) */
        _mm_storeu_si128((__m128i *)(q + k), _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(a)));
    }
    for (; k < n; k++) q[k] = wb_q1(x[k], inv, zpf, qmax);
}

WB_AVX512F static inline float wb_hmin512(__m512 v) {
    return wb_hmin256(_mm256_min_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}
WB_AVX512F static inline float wb_hmax512(__m512 v) {
    return wb_hmax256(_mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}
WB_QUANT_ROW(wb_quant_row_avx512, WB_AVX512F, __m512, 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_min_ps,
             _mm512_max_ps, wb_hmin512, wb_hmax512, wb_quant_apply_avx512)
#define WB_QUANT_AVX512 1
#else
#define WB_QUANT_AVX512 0
#endif

/* q[i] = wb_q1(x[i], inv, zpf, qmax) for i < n with the widest code of ISA `isa` (same bytes) */
static inline void wb_quant_apply(int isa, const float *x, size_t n, float inv, float zpf, float qmax, uint8_t *q) {
#if WB_QUANT_AVX512
    if (isa >= WB_ISA_AVX512_VNNI) { wb_quant_apply_avx512(x, n, inv, zpf, qmax, q); return; }
#endif
    if (isa >= WB_ISA_AVX2) { wb_quant_apply_avx2(x, n, inv, zpf, qmax, q); return; }
    for (size_t i = 0; i < n; i++) q[i] = wb_q1(x[i], inv, zpf, qmax);
}

/* Quantize rows [0, M) of x[M][K] into q[M][Kp] (pad columns zero). */
typedef struct {
    const float *x; int K, Kp; uint8_t *q; float *scale; int32_t *zp; int isa; float qmax;
} wb_quant_rows_job_t;

/* One row with the widest code of ISA `isa` (every version gives the same bytes). */
static inline void wb_quant_row(int isa, const float *x, int K, int Kp, float qmax, uint8_t *q, float *scale,
                                int32_t *zp) {
#if WB_QUANT_AVX512
    if (isa >= WB_ISA_AVX512_VNNI) { wb_quant_row_avx512(x, K, Kp, qmax, q, scale, zp); return; }
#endif
    if (isa >= WB_ISA_AVX2) wb_quant_row_avx2(x, K, Kp, qmax, q, scale, zp);
    else wb_quant_row_portable(x, K, Kp, qmax, q, scale, zp);
}

static void wb_quant_rows_chunk(void *p, long b, long e) {
    const wb_quant_rows_job_t *j = (const wb_quant_rows_job_t *)p;
    for (long m = b; m < e; m++)
        wb_quant_row(j->isa, j->x + (size_t)m * j->K, j->K, j->Kp, j->qmax, j->q + (size_t)m * j->Kp, j->scale + m,
                     j->zp + m);
}

/* Threads for quantizing M rows of K values: one below 32 K values, where a parallel job costs
 * more than it saves (wb_quantize_rows and wb_quant_pack_sparse_vnni). */
static inline int wb_quant_threads(int M, int K, int nt) { return (long)M * K > 32768 ? nt : 1; }

/* qmax: 255 (8-bit) or 127 (7-bit activations) */
static void wb_quantize_rows(const float *x, int M, int K, int Kp, uint8_t *q, float *scale,
                             int32_t *zp, int isa, int nt, int qmax) {
    nt = wb_threads(nt);
    wb_quant_rows_job_t job = {x, K, Kp, q, scale, zp, isa, (float)qmax};
    wb_parallel_for(wb_quant_threads(M, K, nt), M, wb_grain(M, nt, 2), wb_quant_rows_chunk, &job);
}

#endif
