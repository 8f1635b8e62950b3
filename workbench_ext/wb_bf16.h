/* bf16 dense linear: y = bf16(x) . bf16(W)^T + b, products exact in fp32, fp32 accumulation.
 *
 * Conversion fp32 -> bf16 (weights once at pack time, activations per call): round to nearest,
 * ties to even, inputs that are fp32 denormals become signed zero and NaN stays a quiet NaN --
 * what VCVTNE2PS2BF16 does; the scalar `wb_bf16_rne` and the AVX512-BF16 conversion give the
 * same bits (tests check both against a NumPy emulation).
 *
 * AVX512-BF16 path: VDPBF16PS micro-kernel MR(<=8) rows x 32 columns (16 zmm fp32
 * accumulators), weights packed [NP][K2][16][2] (pairs of k per column, 16-column panels, NP
 * even), activations [M][Kp2] bf16 (Kp2 = K rounded up to 2, pad zero) broadcast a pair at a time.
 * Portable path: the same conversion, a scalar pair-wise fp32 dot (a reference; slow).
 */
#ifndef WB_BF16_H
#define WB_BF16_H

#include "wb_bf16_convert.h"

/* x[M][K] -> out[M][Kp2] bf16 (pad column zero). */
typedef struct { const float *x; int K, Kp2; uint16_t *out; int avx512; } wb_bf16_rows_job_t;

static void wb_bf16_rows_chunk(void *p, long b, long e) {
    const wb_bf16_rows_job_t *j = (const wb_bf16_rows_job_t *)p;
    for (long m = b; m < e; m++) {
        uint16_t *o = j->out + (size_t)m * j->Kp2;
        if (j->avx512) wb_bf16_convert_avx512(j->x + (size_t)m * j->K, (size_t)j->K, o);
        else wb_bf16_convert_portable(j->x + (size_t)m * j->K, (size_t)j->K, o);
        if (j->Kp2 > j->K) o[j->K] = 0;
    }
}

static void wb_bf16_convert_rows(const float *x, int M, int K, int Kp2, uint16_t *out, int avx512, int nt) {
    wb_bf16_rows_job_t job = {x, K, Kp2, out, avx512};
    wb_parallel_for((long)M * K > 65536 ? nt : 1, M, wb_grain(M, nt, 2), wb_bf16_rows_chunk, &job);
}

/* w[N][K] fp32 -> out bf16 [NP][K2][16][2] (NP = 2 * ceil(N / 32)), zero-filled by the caller. */
static void wb_bf16_pack(const float *w, int N, int K, uint16_t *out) {
    const int K2 = (K + 1) / 2;
    const size_t panel = (size_t)K2 * 32;
    for (int n = 0; n < N; n++) {
        int p = n / 16, j = n % 16;
        for (int k = 0; k < K; k++)
            out[p * panel + (size_t)(k / 2) * 32 + j * 2 + (k & 1)] = wb_bf16_rne(w[(size_t)n * K + k]);
    }
}

/* Scalar reference: y[m][n] = sum over pairs (a0 * b0 + a1 * b1 in fp32, pair by pair) + bias. */
typedef struct {
    const uint16_t *xb; int M, Kp2; const uint16_t *wp; int N, MB; const float *bias; float *y;
} wb_bf16_dense_job_t;

/* One output's pair-wise dot, never vectorized: GCC 12.2's -O3 loop vectorizer turns this
 * in-order float reduction (two products per pair, stride-32 weight loads) into one that adds a
 * product twice (x = 1..8, w = 1: 37 instead of 36; a 10-line C reproducer does the same), which
 * tests/test_runtime_bf16.py caught once the loop left its OpenMP region. A scalar reference
 * loses nothing by it. */
__attribute__((noinline, optimize("no-tree-vectorize"))) static float wb_bf16_dot_pairs(const uint16_t *a, const uint16_t *b, int K2) {
    float acc = 0.0f;
    for (int k = 0; k < K2; k++) {
        acc += wb_bf16_to_f32(a[2 * k + 1]) * wb_bf16_to_f32(b[(size_t)k * 32 + 1]);
        acc += wb_bf16_to_f32(a[2 * k]) * wb_bf16_to_f32(b[(size_t)k * 32]);
    }
    return acc;
}

static void wb_bf16_dense_portable_chunk(void *p, long tb, long te) {
    const wb_bf16_dense_job_t *j = (const wb_bf16_dense_job_t *)p;
    const int K2 = j->Kp2 / 2, N = j->N;
    const size_t panel = (size_t)K2 * 32;
    for (long t = tb; t < te; t++) {
        int m = (int)(t / N), n = (int)(t % N);
        const uint16_t *a = j->xb + (size_t)m * j->Kp2, *b = j->wp + (n / 16) * panel + (n % 16) * 2;
        j->y[(size_t)m * N + n] = wb_bf16_dot_pairs(a, b, K2) + j->bias[n];
    }
}

static void wb_bf16_dense_portable(const uint16_t *xb, int M, int Kp2, const uint16_t *wp, int N,
                                   const float *bias, float *y, int nt) {
    const long total = (long)M * N;
    wb_bf16_dense_job_t job = {xb, M, Kp2, wp, N, 0, bias, y};
    wb_parallel_for(total * (Kp2 / 2) > 262144 ? nt : 1, total, wb_grain(total, nt, 4), wb_bf16_dense_portable_chunk, &job);
}

#define WB_B_ROW(r)                                                                           \
    if (mr_c > r) {                                                                           \
        int32_t av; memcpy(&av, A + r * lda + 2 * (size_t)k, 4);                              \
        const __m512bh a = (__m512bh)_mm512_set1_epi32(av);                                   \
        c##r##0 = _mm512_dpbf16_ps(c##r##0, a, b0);                                           \
        c##r##1 = _mm512_dpbf16_ps(c##r##1, a, b1);                                           \
    }
#define WB_B_STORE(r)                                                                         \
    if (mr_c > r) {                                                                           \
        float *o = y + (size_t)r * ldy;                                                       \
        _mm512_mask_storeu_ps(o, m0, _mm512_add_ps(c##r##0, bias0));                          \
        _mm512_mask_storeu_ps(o + 16, m1, _mm512_add_ps(c##r##1, bias1));                     \
    }
#define WB_BF16_DENSE_KERNEL(MR)                                                              \
WB_BF16 static void wb_bf16_dense_k##MR(const uint16_t *A, size_t lda, const uint16_t *B,     \
                                        size_t panel, int k2, const float *bias, int nr,      \
                                        float *y, size_t ldy) {                               \
    const int mr_c = MR;                                                                      \
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00;             \
    __m512 c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;       \
    __m512 c60 = c00, c61 = c00, c70 = c00, c71 = c00;                                        \
    for (int k = 0; k < k2; k++) {                                                            \
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)(B + (size_t)k * 32)); \
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512((const void *)(B + panel + (size_t)k * 32)); \
        WB_B_ROW(0) WB_B_ROW(1) WB_B_ROW(2) WB_B_ROW(3)                                       \
        WB_B_ROW(4) WB_B_ROW(5) WB_B_ROW(6) WB_B_ROW(7)                                       \
    }                                                                                         \
    const __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);                    \
    const __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (1u << (nr - 16)) - 1); \
    const __m512 bias0 = _mm512_maskz_loadu_ps(m0, bias), bias1 = _mm512_maskz_loadu_ps(m1, bias + 16); \
    WB_B_STORE(0) WB_B_STORE(1) WB_B_STORE(2) WB_B_STORE(3)                                   \
    WB_B_STORE(4) WB_B_STORE(5) WB_B_STORE(6) WB_B_STORE(7)                                   \
}
WB_BF16_DENSE_KERNEL(1)
WB_BF16_DENSE_KERNEL(2)
WB_BF16_DENSE_KERNEL(3)
WB_BF16_DENSE_KERNEL(4)
WB_BF16_DENSE_KERNEL(5)
WB_BF16_DENSE_KERNEL(6)
WB_BF16_DENSE_KERNEL(7)
WB_BF16_DENSE_KERNEL(8)

/* Work items = 8 rows x 32 columns, parallel over (column pair of panels, row block). */
static void wb_bf16_dense_avx512_chunk(void *p, long tb, long te) {
    const wb_bf16_dense_job_t *j = (const wb_bf16_dense_job_t *)p;
    const int Kp2 = j->Kp2, K2 = Kp2 / 2, N = j->N, MB = j->MB;
    const size_t panel = (size_t)K2 * 32;
    for (long t = tb; t < te; t++) {
        int p2 = (int)(t / MB), mb = (int)(t % MB);
        int n0 = p2 * 32, nr = wb_imin(32, N - n0), m0 = mb * 8, mr = wb_imin(8, j->M - m0);
        const uint16_t *A = j->xb + (size_t)m0 * Kp2, *B = j->wp + (size_t)(2 * p2) * panel;
        float *out = j->y + (size_t)m0 * N + n0;
        const float *b = j->bias + n0;
        switch (mr) {
            case 8: wb_bf16_dense_k8(A, Kp2, B, panel, K2, b, nr, out, N); break;
            case 7: wb_bf16_dense_k7(A, Kp2, B, panel, K2, b, nr, out, N); break;
            case 6: wb_bf16_dense_k6(A, Kp2, B, panel, K2, b, nr, out, N); break;
            case 5: wb_bf16_dense_k5(A, Kp2, B, panel, K2, b, nr, out, N); break;
            case 4: wb_bf16_dense_k4(A, Kp2, B, panel, K2, b, nr, out, N); break;
            case 3: wb_bf16_dense_k3(A, Kp2, B, panel, K2, b, nr, out, N); break;
            case 2: wb_bf16_dense_k2(A, Kp2, B, panel, K2, b, nr, out, N); break;
            default: wb_bf16_dense_k1(A, Kp2, B, panel, K2, b, nr, out, N); break;
        }
    }
}

static void wb_bf16_dense_avx512(const uint16_t *xb, int M, int Kp2, const uint16_t *wp, int N,
                                 const float *bias, float *y, int nt) {
    const int NP2 = (N + 31) / 32, MB = (M + 7) / 8;
    const long total = (long)NP2 * MB;
    wb_bf16_dense_job_t job = {xb, M, Kp2, wp, N, MB, bias, y};
    wb_parallel_for(nt, total, wb_grain(total, nt, 4), wb_bf16_dense_avx512_chunk, &job);
}

#endif
