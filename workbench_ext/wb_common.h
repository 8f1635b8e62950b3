/* Shared helpers for the workbench_ext kernels: ISA codes, target attributes, per-token u8
 * quantization (identical arithmetic on every path) and the int8 dequantize epilogue.
 *
 * Every ISA-specific function carries its own __attribute__((target(...))), so the extension
 * is compiled with portable flags and still contains the AVX2 / AVX-512 VNNI / AMX code; the
 * caller (workbench_ext.cpu) decides at run time which path may run.
 */
#ifndef WB_COMMON_H
#define WB_COMMON_H

#pragma GCC diagnostic ignored "-Wunused-function"

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <immintrin.h>
#include "wb_pool.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define WB_ISA_PORTABLE 0
#define WB_ISA_AVX2 1
#define WB_ISA_AVX512_VNNI 2
#define WB_ISA_AMX 3

#define WB_AVX2 __attribute__((target("avx2,fma")))
/* Overridable so workbench_ext/testing/emulate_isa.c can compile the AVX-512 / AMX kernels
 * against scalar emulations of their intrinsics (logic test on CPUs without them). */
#ifndef WB_AVX512
#define WB_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#endif
/* AVX-512 float code outside the int8 kernels (never emulated: testing/emulate_isa.c redefines
 * WB_AVX512 only); runs where the ISA check found avx512_vnni. */
#define WB_AVX512F __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#ifndef WB_AMX
#define WB_AMX __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")))
#endif

static inline int wb_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static inline int wb_threads(int nt) {
    if (nt <= 0) nt = wb_max_threads();
    return nt < 1 ? 1 : nt;
}

/* A scratch buffer of at least `bytes` owned by the calling thread, 64-byte aligned, kept and
 * reused for the thread's life (pool workers live as long as the process): kernels that need
 * per-thread scratch in every chunk get it without a malloc per chunk. NULL if out of memory.
 * One buffer per thread: a kernel holding it must not call another kernel that takes it. */
static void *wb_thread_scratch(size_t bytes) {
    static _Thread_local void *buf = NULL;
    static _Thread_local size_t cap = 0;
    if (bytes > cap) {
        size_t want = (bytes + 63) / 64 * 64;
        void *p = aligned_alloc(64, want);
        if (!p) return NULL;
        free(buf);
        buf = p;
        cap = want;
    }
    return buf;
}

static inline int wb_imin(int a, int b) { return a < b ? a : b; }

/* 8x8 float transpose in registers, and a transposed store of 8 column vectors (lanes = rows)
 * into a row-major matrix (float or int32 bits), limited to mr rows x nc columns. */
WB_AVX2 static inline __attribute__((always_inline)) void wb_transpose8(__m256 *r) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20); r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20); r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31); r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31); r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* Store an 8x8 block (R[j] = column j, lanes = rows) transposed into out[rows][N] (float or
 * int32 bits), rows < mr and columns < nc only. */
WB_AVX2 static inline __attribute__((always_inline)) void
wb_store_8x8_t(__m256 *R, int mr, int nc, void *out, size_t ld, size_t elt_off) {
    wb_transpose8(R);
    float *o = (float *)out;
    for (int r = 0; r < mr && r < 8; r++) {
        float *dst = o + (size_t)r * ld + elt_off;
        if (nc == 8) {
            _mm256_storeu_ps(dst, R[r]);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, R[r]);
            for (int j = 0; j < nc; j++) dst[j] = tmp[j];
        }
    }
}

/* 16x16 float transpose in registers (unpack, 4x4 shuffles, then 128-bit lane shuffles). */
WB_AVX512F static inline __attribute__((always_inline)) void wb_transpose16(__m512 *r) {
    __m512 t[16], u[16];
    #pragma GCC unroll 8
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    #pragma GCC unroll 4
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {            /* 128-bit lanes 0, 2 and 1, 3 of row groups 0/4, 8/12 */
        t[i] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(u[i], u[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(u[i + 8], u[i + 12], 0xDD);
    }
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
}

/* ------------------------------------------------------------------------------------------
 * Per-token asymmetric u8 quantization.
 *   lo = min(0, min x), hi = max(0, max x), scale = (hi - lo) / 255 (all-zero row: scale 1),
 *   zp = clamp(rint(-lo / scale), 0, 255), q = clamp(rint(x * (1/scale)) + zp, 0, 255)
 * The scalar and the AVX2 versions perform the same IEEE operations in the same order (no
 * FMA contraction: the build uses -std=c11, i.e. -ffp-contract=off), so they give identical
 * bytes; tests rely on that.
 * ---------------------------------------------------------------------------------------- */
static inline void wb_qparams(float lo, float hi, float *scale, int32_t *zp, float *inv) {
    lo = lo < 0.0f ? lo : 0.0f;
    hi = hi > 0.0f ? hi : 0.0f;
    float s = (hi - lo) / 255.0f;
    if (!(s > 0.0f) || !isfinite(s)) {
        *scale = 1.0f; *zp = 0; *inv = 1.0f;
        return;
    }
    float z = rintf(-lo / s);
    z = z > 0.0f ? z : 0.0f;
    z = z < 255.0f ? z : 255.0f;
    *scale = s; *zp = (int32_t)z; *inv = 1.0f / s;
}

static inline uint8_t wb_q1(float x, float inv, float zpf) {
    float v = rintf(x * inv) + zpf;
    v = v > 0.0f ? v : 0.0f;          /* NaN -> 0, same as _mm256_max_ps(v, 0) */
    v = v < 255.0f ? v : 255.0f;
    return (uint8_t)(int)v;
}

static void wb_quant_row_portable(const float *x, int K, int Kp, uint8_t *q, float *scale, int32_t *zp) {
    float lo = 0.0f, hi = 0.0f, inv;
    for (int k = 0; k < K; k++) {
        float v = x[k];
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    wb_qparams(lo, hi, scale, zp, &inv);
    float zpf = (float)*zp;
    for (int k = 0; k < K; k++) q[k] = wb_q1(x[k], inv, zpf);
    for (int k = K; k < Kp; k++) q[k] = 0;
}

/* q[i] = clamp(rint(x[i] * inv) + zpf, 0, 255): same operations as wb_q1, 16 at a time. */
WB_AVX2 static void wb_quant_apply_avx2(const float *x, size_t n, float inv, float zpf, uint8_t *q) {
    const __m256 vinv = _mm256_set1_ps(inv), vzp = _mm256_set1_ps(zpf);
    const __m256 v0 = _mm256_setzero_ps(), v255 = _mm256_set1_ps(255.0f);
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
    for (; k < n; k++) q[k] = wb_q1(x[k], inv, zpf);
}

WB_AVX2 static void wb_quant_row_avx2(const float *x, int K, int Kp, uint8_t *q, float *scale, int32_t *zp) {
    __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 v = _mm256_loadu_ps(x + k);
        vlo = _mm256_min_ps(v, vlo);    /* NaN in v -> keeps vlo, like the scalar compare */
        vhi = _mm256_max_ps(v, vhi);
    }
    float lo_a[8], hi_a[8];
    _mm256_storeu_ps(lo_a, vlo);
    _mm256_storeu_ps(hi_a, vhi);
    float lo = 0.0f, hi = 0.0f, inv;
    for (int i = 0; i < 8; i++) { lo = lo_a[i] < lo ? lo_a[i] : lo; hi = hi_a[i] > hi ? hi_a[i] : hi; }
    for (; k < K; k++) { float v = x[k]; lo = v < lo ? v : lo; hi = v > hi ? v : hi; }
    wb_qparams(lo, hi, scale, zp, &inv);
    wb_quant_apply_avx2(x, (size_t)K, inv, (float)*zp, q);
    for (k = K; k < Kp; k++) q[k] = 0;
}

/* Quantize rows [0, M) of x[M][K] into q[M][Kp] (pad columns zero). */
typedef struct {
    const float *x; int K, Kp; uint8_t *q; float *scale; int32_t *zp; int use_avx2;
} wb_quant_rows_job_t;

static void wb_quant_rows_chunk(void *p, long b, long e) {
    const wb_quant_rows_job_t *j = (const wb_quant_rows_job_t *)p;
    for (long m = b; m < e; m++) {
        const float *x = j->x + (size_t)m * j->K;
        uint8_t *q = j->q + (size_t)m * j->Kp;
        if (j->use_avx2) wb_quant_row_avx2(x, j->K, j->Kp, q, j->scale + m, j->zp + m);
        else wb_quant_row_portable(x, j->K, j->Kp, q, j->scale + m, j->zp + m);
    }
}

static void wb_quantize_rows(const float *x, int M, int K, int Kp, uint8_t *q, float *scale,
                             int32_t *zp, int isa, int nt) {
    nt = wb_threads(nt);
    wb_quant_rows_job_t job = {x, K, Kp, q, scale, zp, isa >= WB_ISA_AVX2};
    wb_parallel_for((long)M * K > 32768 ? nt : 1, M, wb_grain(M, nt, 2), wb_quant_rows_chunk, &job);
}

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
} wb_epi_t;

#define WB_ACT_NONE 0
#define WB_ACT_GELU_PORTABLE 1
#define WB_ACT_GELU_AVX2 2
#define WB_ACT_GELU_AVX512 3

/* ---------------- GELU (erf form): 0.5 x (1 + erf(x / sqrt 2)) ---------------- */
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
 * n % 16 values go through wb_gelu_avx2. */
WB_AVX512F static inline __m512 wb_erf_avx512(__m512 x) {
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
    return _mm512_div_ps(p, q);
}

WB_AVX512F static void wb_gelu_avx512(const float *x, float *y, size_t n) {
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), r2 = _mm512_set1_ps(0.70710678118654752f);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 e = wb_erf_avx512(_mm512_mul_ps(v, r2));
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, e)));
    }
    if (i < n) wb_gelu_avx2(x + i, y + i, n - i);
}


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
