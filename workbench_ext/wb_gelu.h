/* GELU, erf form, on every ISA (workbench_ext.ops and the int8 epilogue's fused activation). */
#ifndef WB_GELU_H
#define WB_GELU_H

#include "wb_common.h"

static void wb_gelu_portable(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

/* erf(x) for |x| < 4 via the rational approximation used by Eigen/XLA (float error ~1e-7),
 * clamped to +-1 beyond. */
WB_AVX2 static inline __m256 wb_erf_avx2(__m256 x) {
    const __m256 lim = _mm256_set1_ps(3.832506856900711f);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_sub_ps(_mm256_setzero_ps(), lim)), lim);
    const __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-2.72614225801306e-10f);
    p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(2.77068142495902e-08f));
    p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-2.10102402082508e-06f));
    p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-5.69250639462346e-05f));
    p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-7.34990630326855e-04f));
    p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-2.95459980854025e-03f));
    p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-1.60960333262415e-02f));
    p = _mm256_mul_ps(x, p);
    __m256 q = _mm256_set1_ps(-1.45660718464996e-05f);
    q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-2.13374055278905e-04f));
    q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-1.68282697438203e-03f));
    q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-7.37332916720468e-03f));
    q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-1.42647390514189e-02f));
    return _mm256_div_ps(p, q);
}

WB_AVX2 static void wb_gelu_avx2(const float *x, float *y, size_t n) {
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), r2 = _mm256_set1_ps(0.70710678118654752f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 e = wb_erf_avx2(_mm256_mul_ps(v, r2));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e)));
    }
    if (i < n) {  /* the tail through the same vector code: a value's GELU never depends on where it sits */
        float t[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        memcpy(t, x + i, sizeof(float) * (n - i));
        __m256 v = _mm256_loadu_ps(t);
        __m256 e = wb_erf_avx2(_mm256_mul_ps(v, r2));
        _mm256_storeu_ps(t, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e)));
        memcpy(y + i, t, sizeof(float) * (n - i));
    }
}

/* The same operations as wb_erf_avx2 / wb_gelu_avx2 on 16 lanes (min, max, mul, fmadd and div
 * are exact lane-wise IEEE operations), so bit-identical results at twice the width; the last
 * n % 16 values go through wb_gelu_avx2. wb_erf_pq_avx512 gives the rational's numerator and
 * (in *q) denominator, so a variant can replace the division (results/bench/zen5-sparse-bound/). */
WB_AVX512F static inline __m512 wb_erf_pq_avx512(__m512 x, __m512 *q_out) {
    const __m512 lim = _mm512_set1_ps(3.832506856900711f);
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim);
    const __m512 x2 = _mm512_mul_ps(x, x);
    __m512 p = _mm512_set1_ps(-2.72614225801306e-10f);
    p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(2.77068142495902e-08f));
    p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-2.10102402082508e-06f));
    p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-5.69250639462346e-05f));
    p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-7.34990630326855e-04f));
    p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-2.95459980854025e-03f));
    p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-1.60960333262415e-02f));
    p = _mm512_mul_ps(x, p);
    __m512 q = _mm512_set1_ps(-1.45660718464996e-05f);
    q = _mm512_fmadd_ps(x2, q, _mm512_set1_ps(-2.13374055278905e-04f));
    q = _mm512_fmadd_ps(x2, q, _mm512_set1_ps(-1.68282697438203e-03f));
    q = _mm512_fmadd_ps(x2, q, _mm512_set1_ps(-7.37332916720468e-03f));
    q = _mm512_fmadd_ps(x2, q, _mm512_set1_ps(-1.42647390514189e-02f));
    *q_out = q;
    return p;
}

WB_AVX512F static inline __m512 wb_erf_avx512(__m512 x) {
    __m512 q;
    const __m512 p = wb_erf_pq_avx512(x, &q);
    return _mm512_div_ps(p, q);
}

/* GELU of 16 values in a register: wb_gelu_avx512's operations, so the same bits (the AVX-512
 * int8 epilogues, dense and sparse, apply it before their outputs leave the registers) */
WB_AVX512F static inline __m512 wb_gelu_ps512(__m512 v) {
    const __m512 e = wb_erf_avx512(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)));
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

WB_AVX512F static void wb_gelu_avx512(const float *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, wb_gelu_ps512(_mm512_loadu_ps(x + i)));
    if (i < n) wb_gelu_avx2(x + i, y + i, n - i);
}

#endif
