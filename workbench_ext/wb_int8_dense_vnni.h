/* Dense int8 GEMM on AVX-512 VNNI, and the AVX-512 epilogue it shares with the AMX kernel. */
#ifndef WB_INT8_DENSE_VNNI_H
#define WB_INT8_DENSE_VNNI_H

#include "wb_epilogue.h"

#ifndef WB_EMULATE_ISA   /* testing/emulate_isa.c stands in its own __m512i: not for this code */
/* wb_epilogue for the AVX-512 kernels (VNNI and AMX dense): the same operations per output
 * (integer zero-point correction, convert, two multiplies, add: no FMA), so the same bits, 16
 * outputs at a time. The portable-flags wb_epilogue compiles to 4-lane SSE; at K = 768 the VNNI
 * kernel spends ~6 cycles of multiply-adds per output and the AMX one under 1, so a scalar-ish
 * epilogue was a large share of both. */
WB_AVX512F static void wb_epilogue_avx512(const wb_epi_t *e, const int32_t *C, int ldc, int m0, int mr, int n0, int nr) {
    const size_t N = (size_t)e->N;
    const int32_t *ws = e->wsum + n0;
    const float *wsc = e->wscale + n0, *bias = e->bias + n0;
    /* the fused activation on the registers, before the store (lane-wise: the same bits as
     * wb_epi_activation's pass over the stored tile, which the other codes still take) */
    const int gelu = !e->yi && e->act == WB_ACT_GELU_AVX512;
    for (int r = 0; r < mr; r++) {
        const int m = m0 + r;
        const __m512i vz = _mm512_set1_epi32(e->zp[m]);
        const __m512 vxs = _mm512_set1_ps(e->xscale[m]);
        const int32_t *c = C + (size_t)r * ldc;
        for (int j = 0; j < nr; j += 16) {
            const int nc = nr - j < 16 ? nr - j : 16;
            const __mmask16 k = (__mmask16)(nc == 16 ? 0xFFFF : (1u << nc) - 1u);
            const __m512i v = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(k, c + j),
                                               _mm512_mullo_epi32(vz, _mm512_maskz_loadu_epi32(k, ws + j)));
            if (e->yi) {
                _mm512_mask_storeu_epi32(e->yi + (size_t)m * N + n0 + j, k, v);
            } else {
                const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_mul_ps(vxs, _mm512_maskz_loadu_ps(k, wsc + j)));
                __m512 y = _mm512_add_ps(f, _mm512_maskz_loadu_ps(k, bias + j));
                if (gelu) y = wb_gelu_ps512(y);
                _mm512_mask_storeu_ps(e->y + (size_t)m * N + n0 + j, k, y);
            }
        }
    }
    if (!gelu) wb_epi_activation(e, m0, mr, n0, nr);
}

/* wb_epilogue_avx512 for exactly 32 columns (the AMX kernel's whole items): the same lane-wise
 * operations (the same bits), with the columns' sums, scales and biases loaded once for all rows
 * and no masks. Per row and 16 outputs it leaves 8 vector operations (GELU aside), where the
 * general one spent as many again on masks, addresses and reloads of e's fields. A single
 * general function with the columns outer (their loads hoisted, masked) was measured instead of
 * this copy and ran the AMX GEMMs at N = 2304 / 3072 ~12 % slower (separate builds alternating,
 * 2 threads, Sapphire Rapids-class): two rows' vectors per iteration, unmasked, is the gain. */
WB_AVX512F static void wb_epilogue_avx512_w32(const wb_epi_t *e, const int32_t *C, int ldc, int m0, int mr, int n0) {
    const size_t N = (size_t)e->N;
    const __m512i ws0 = _mm512_loadu_si512((const void *)(e->wsum + n0));
    const __m512i ws1 = _mm512_loadu_si512((const void *)(e->wsum + n0 + 16));
    int32_t *yi = e->yi;
    float *y = e->y;
    if (yi) {
        for (int r = 0; r < mr; r++) {
            const __m512i vz = _mm512_set1_epi32(e->zp[m0 + r]);
            const int32_t *c = C + (size_t)r * ldc;
            int32_t *o = yi + (size_t)(m0 + r) * N + n0;
            const __m512i v0 = _mm512_sub_epi32(_mm512_loadu_si512((const void *)c), _mm512_mullo_epi32(vz, ws0));
            const __m512i v1 = _mm512_sub_epi32(_mm512_loadu_si512((const void *)(c + 16)), _mm512_mullo_epi32(vz, ws1));
            _mm512_storeu_si512((void *)o, v0);
            _mm512_storeu_si512((void *)(o + 16), v1);
        }
        return;
    }
    const __m512 sc0 = _mm512_loadu_ps(e->wscale + n0), sc1 = _mm512_loadu_ps(e->wscale + n0 + 16);
    const __m512 b0 = _mm512_loadu_ps(e->bias + n0), b1 = _mm512_loadu_ps(e->bias + n0 + 16);
    const int32_t *zp = e->zp + m0;
    const float *xs = e->xscale + m0;
    const int gelu = e->act == WB_ACT_GELU_AVX512;
    for (int r = 0; r < mr; r++) {
        const __m512i vz = _mm512_set1_epi32(zp[r]);
        const __m512 vxs = _mm512_set1_ps(xs[r]);
        const int32_t *c = C + (size_t)r * ldc;
        float *o = y + (size_t)(m0 + r) * N + n0;
        const __m512i v0 = _mm512_sub_epi32(_mm512_loadu_si512((const void *)c), _mm512_mullo_epi32(vz, ws0));
        const __m512i v1 = _mm512_sub_epi32(_mm512_loadu_si512((const void *)(c + 16)), _mm512_mullo_epi32(vz, ws1));
        __m512 f0 = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v0), _mm512_mul_ps(vxs, sc0)), b0);
        __m512 f1 = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v1), _mm512_mul_ps(vxs, sc1)), b1);
        if (gelu) { f0 = wb_gelu_ps512(f0); f1 = wb_gelu_ps512(f1); }
        _mm512_storeu_ps(o, f0);
        _mm512_storeu_ps(o + 16, f1);
    }
    if (!gelu) wb_epi_activation(e, m0, mr, n0, 32);
}

/* an output tile's epilogue: 32 columns on the unmasked path, others on the general one */
WB_AVX512F static inline void wb_dense_epilogue_avx512(const wb_epi_t *e, const int32_t *C, int ldc, int m0, int mr,
                                                      int n0, int nr) {
    if (nr == 32) wb_epilogue_avx512_w32(e, C, ldc, m0, mr, n0);
    else wb_epilogue_avx512(e, C, ldc, m0, mr, n0, nr);
}
#define WB_DENSE_AVX512_EPILOGUE wb_dense_epilogue_avx512
#else
static void wb_epilogue_then_activation(const wb_epi_t *e, const int32_t *C, int ldc, int m0, int mr, int n0, int nr) {
    wb_epilogue(e, C, ldc, m0, mr, n0, nr);
    wb_epi_activation(e, m0, mr, n0, nr);
}
#define WB_DENSE_AVX512_EPILOGUE wb_epilogue_then_activation
#endif
/* WB_DENSE_AVX512_EPILOGUE(e, C, ldc, m0, mr, n0, nr): the epilogue of an output tile and its
 * fused activation */

/* ========================================================================================
 * Dense: AVX-512 VNNI.  Micro-kernel MR(<=8) x 32 outputs, per 4 k: 2 weight loads (64 B),
 * MR broadcasts, 2*MR vpdpbusd (u8 activations x s8 weights -> s32, exact).
 * Executed on the Zen 5 development machines (AVX-512 VNNI, no AMX).
 * ====================================================================================== */
/* MR x 32 micro-kernel (MR <= 8): two adjacent 16-column panels, 16 zmm accumulators;
 * per 4 k: 2 weight loads + MR broadcasts for 2*MR vpdpbusd. */
#define WB_V_ROW(r)                                                                           \
    if (mr_c > r) {                                                                           \
        int32_t av; memcpy(&av, A + r * lda + 4 * (size_t)k, 4);                              \
        const __m512i a = _mm512_set1_epi32(av);                                              \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, a, b0);                                        \
        c##r##1 = _mm512_dpbusd_epi32(c##r##1, a, b1);                                        \
    }
#define WB_V_STORE(r)                                                                         \
    if (mr_c > r) {                                                                           \
        _mm512_storeu_si512((void *)(C + r * 32), c##r##0);                                   \
        _mm512_storeu_si512((void *)(C + r * 32 + 16), c##r##1);                              \
    }
#define WB_VNNI_DENSE_KERNEL(MR)                                                              \
WB_AVX512 static void wb_vnni_dense_k##MR(const uint8_t *A, size_t lda, const int8_t *B,      \
                                          size_t panel, int kq, int32_t *C) {                 \
    const int mr_c = MR;                                                                      \
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00;         \
    __m512i c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;      \
    __m512i c60 = c00, c61 = c00, c70 = c00, c71 = c00;                                       \
    for (int k = 0; k < kq; k++) {                                                            \
        const __m512i b0 = _mm512_loadu_si512((const void *)(B + (size_t)k * 64));            \
        const __m512i b1 = _mm512_loadu_si512((const void *)(B + panel + (size_t)k * 64));    \
        WB_V_ROW(0) WB_V_ROW(1) WB_V_ROW(2) WB_V_ROW(3)                                       \
        WB_V_ROW(4) WB_V_ROW(5) WB_V_ROW(6) WB_V_ROW(7)                                       \
    }                                                                                         \
    WB_V_STORE(0) WB_V_STORE(1) WB_V_STORE(2) WB_V_STORE(3)                                   \
    WB_V_STORE(4) WB_V_STORE(5) WB_V_STORE(6) WB_V_STORE(7)                                   \
}
WB_VNNI_DENSE_KERNEL(1)
WB_VNNI_DENSE_KERNEL(2)
WB_VNNI_DENSE_KERNEL(3)
WB_VNNI_DENSE_KERNEL(4)
WB_VNNI_DENSE_KERNEL(5)
WB_VNNI_DENSE_KERNEL(6)
WB_VNNI_DENSE_KERNEL(7)
WB_VNNI_DENSE_KERNEL(8)

/* Bp has an even number of 16-column panels (shared with AMX); items = 8 rows x 32 columns,
 * ordered panel-major so that a chunk of consecutive items reuses its weight panels. */
typedef struct {
    const uint8_t *xq; int M, Kp; const int8_t *Bp; int N, MB, NP2; size_t panel; const wb_epi_t *e;
} wb_dense_vnni_job_t;

static void wb_dense_vnni_chunk(void *p, long b, long end) {
    const wb_dense_vnni_job_t *j = (const wb_dense_vnni_job_t *)p;
    const int Kp = j->Kp, MB = j->MB;
    const size_t panel = j->panel;
    for (long t = b; t < end; t++) {
        int p2, mb;
        wb_epi_item(j->e, t, MB, j->NP2, 0, &mb, &p2);
        int n0 = p2 * 32, nr = wb_imin(32, j->N - n0), m0 = mb * 8, mr = wb_imin(8, j->M - m0);
        int32_t C[8 * 32];
        const uint8_t *A = j->xq + (size_t)m0 * Kp;
        const int8_t *B = j->Bp + (size_t)(2 * p2) * panel;
        switch (mr) {
            case 8: wb_vnni_dense_k8(A, Kp, B, panel, Kp / 4, C); break;
            case 7: wb_vnni_dense_k7(A, Kp, B, panel, Kp / 4, C); break;
            case 6: wb_vnni_dense_k6(A, Kp, B, panel, Kp / 4, C); break;
            case 5: wb_vnni_dense_k5(A, Kp, B, panel, Kp / 4, C); break;
            case 4: wb_vnni_dense_k4(A, Kp, B, panel, Kp / 4, C); break;
            case 3: wb_vnni_dense_k3(A, Kp, B, panel, Kp / 4, C); break;
            case 2: wb_vnni_dense_k2(A, Kp, B, panel, Kp / 4, C); break;
            default: wb_vnni_dense_k1(A, Kp, B, panel, Kp / 4, C); break;
        }
        WB_DENSE_AVX512_EPILOGUE(j->e, C, 32, m0, mr, n0, nr);
    }
}

static void wb_dense_vnni(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N,
                          const wb_epi_t *e, int nt) {
    const int NP2 = (N + 31) / 32, MB = (M + 7) / 8;
    const long total = (long)NP2 * MB;
    wb_dense_vnni_job_t job = {xq, M, Kp, Bp, N, MB, NP2, (size_t)(Kp / 4) * 64, e};
    wb_parallel_for(nt, total, wb_grain(total, nt, 4), wb_dense_vnni_chunk, &job);
}

#endif
