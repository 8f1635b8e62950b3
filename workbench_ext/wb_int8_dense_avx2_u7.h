/* Dense int8 GEMM on AVX2 for 7-bit activations (the layers' opt-in act_bits=7), or 8-bit ones
 * against pair-bounded weights.
 *
 * With q in [0, 127] and weights in [-128, 127], vpmaddubsw's s16 pair sums lie in
 * [-2 * 127 * 128, 2 * 127 * 127] = [-32512, 32258]; with q in [0, 255] and weights whose k-pairs
 * have |w[2j]| + |w[2j+1]| <= 128 they lie in [-32640, 32640].  Either way inside s16, so they
 * never saturate and the product is exact; vpmaddwd
 * against ones then widens each pair to s32.  Three vector instructions cover 32 multiply-adds
 * (the 8-bit pair-product kernel of wb_int8_dense_avx2.h needs five), which is what ONNX
 * Runtime's u8 x s8 AVX2 kernel does too -- it keeps 8-bit activations and lets the pair
 * sums saturate instead.  Measured on a Zen 3 core (C harness, 768 x 3072 weights, 128 rows,
 * one thread): ~180-190 GOP/s against ~160 for the pair-product kernel.
 *
 * Weights: the VNNI layout int8 [NP][Kp/4][16][4] (wb_pack_dense_vnni): for k-quad q the 16
 * columns' 4 bytes are 64 consecutive bytes, columns 0-7 then 8-15, one ymm each.
 * Activations: u8 rows [M][Kp]; one 32-bit broadcast is a row's k-quad.
 * Result: acc - zp[m] * wsum[n] = sum_k (q - zp) w, so the centred epilogue of the 8-bit
 * kernel finishes it with the same float operations (bit-identical on every ISA).
 * Micro-kernel: MR(<=4) rows x 16 columns: 8 accumulators + 2 weights + ones + broadcast +
 * 2 temporaries = 14 ymm. */
#ifndef WB_INT8_DENSE_AVX2_U7_H
#define WB_INT8_DENSE_AVX2_U7_H

#include "wb_int8_dense_avx2.h"   /* the shared assembly prologue and row blocking */

#define WB_U7_ROW(r)                                                                          \
    if (mr_c > r) {                                                                           \
        int32_t a;                                                                            \
        memcpy(&a, A + r * lda + 4 * (size_t)q, 4);                                           \
        const __m256i x = _mm256_set1_epi32(a);                                               \
        c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones)); \
        c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones)); \
    }
#define WB_U7_STORE(r)                                                                        \
    if (mr_c > r) {                                                                           \
        const __m256i z = _mm256_set1_epi32(zp[r]);                                           \
        _mm256_storeu_si256((__m256i *)(C + r * 16), _mm256_sub_epi32(c##r##0, _mm256_mullo_epi32(z, ws0))); \
        _mm256_storeu_si256((__m256i *)(C + r * 16 + 8), _mm256_sub_epi32(c##r##1, _mm256_mullo_epi32(z, ws1))); \
    }
#define WB_U7_KERNEL(MR)                                                                      \
WB_AVX2 static void wb_avx2_u7_k##MR(const uint8_t *A, size_t lda, const int8_t *B, int kquads, \
                                     const int32_t *zp, const int32_t *wsum16, int32_t *C) {  \
    const int mr_c = MR;                                                                      \
    const __m256i ones = _mm256_set1_epi16(1);                                                \
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, \
            c30 = c00, c31 = c00;                                                             \
    for (int q = 0; q < kquads; q++) {                                                        \
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(B + (size_t)q * 64));         \
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(B + (size_t)q * 64 + 32));    \
        WB_U7_ROW(0) WB_U7_ROW(1) WB_U7_ROW(2) WB_U7_ROW(3)                                   \
    }                                                                                         \
    const __m256i ws0 = _mm256_loadu_si256((const __m256i *)wsum16);                          \
    const __m256i ws1 = _mm256_loadu_si256((const __m256i *)(wsum16 + 8));                    \
    WB_U7_STORE(0) WB_U7_STORE(1) WB_U7_STORE(2) WB_U7_STORE(3)                               \
}
WB_U7_KERNEL(1)
WB_U7_KERNEL(2)
WB_U7_KERNEL(3)

/* The 4-row kernel in assembly: from the intrinsics GCC spilled an accumulator to the stack and
 * added eight register moves per k-quad (47 instructions per 256 multiply-adds, ~1.1x the
 * 8-bit kernel); here it is 33.  ymm0-7: accumulators (row r: ymm2r, ymm2r+1), ymm8/9: the
 * weights of columns 0-7 / 8-15, ymm12: the row's broadcast quad, ymm13/14: products,
 * ymm15: ones (vpmaddwd's widening). */
#define WB_U7_ASM_ROW(ra, c0, c1)                                                            \
    "vpbroadcastd " ra ", %%ymm12\n\t"                                                       \
    "vpmaddubsw %%ymm8, %%ymm12, %%ymm13\n\t"                                                \
    "vpmaddubsw %%ymm9, %%ymm12, %%ymm14\n\t"                                                \
    "vpmaddwd %%ymm15, %%ymm13, %%ymm13\n\t"                                                 \
    "vpmaddwd %%ymm15, %%ymm14, %%ymm14\n\t"                                                 \
    "vpaddd %%ymm13, %%" c0 ", %%" c0 "\n\t"                                                 \
    "vpaddd %%ymm14, %%" c1 ", %%" c1 "\n\t"
WB_AVX2 static void wb_avx2_u7_k4(const uint8_t *A, size_t lda, const int8_t *B, int kquads,
                                  const int32_t *zp, const int32_t *wsum16, int32_t *C) {
    const uint8_t *a = A;
    const int8_t *b = B;
    long n = kquads;
    const long l1 = (long)lda, l3 = 3 * (long)lda;
    const int16_t one = 1;
    __asm__ volatile(
        WB_ASM_ZERO_YMM0_7
        "vpbroadcastw %[one], %%ymm15\n\t"
        "test %[n], %[n]\n\t"
        "jle 2f\n\t"
        "1:\n\t"
        "vmovdqu (%[b]), %%ymm8\n\t"
        "vmovdqu 32(%[b]), %%ymm9\n\t"
        WB_U7_ASM_ROW("(%[a])", "ymm0", "ymm1")
        WB_U7_ASM_ROW("(%[a],%[l1],1)", "ymm2", "ymm3")
        WB_U7_ASM_ROW("(%[a],%[l1],2)", "ymm4", "ymm5")
        WB_U7_ASM_ROW("(%[a],%[l3],1)", "ymm6", "ymm7")
        "add $4, %[a]\n\t"
        "add $64, %[b]\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        "2:\n\t"
        "vmovdqu %%ymm0, (%[c])\n\t"   "vmovdqu %%ymm1, 32(%[c])\n\t"
        "vmovdqu %%ymm2, 64(%[c])\n\t" "vmovdqu %%ymm3, 96(%[c])\n\t"
        "vmovdqu %%ymm4, 128(%[c])\n\t" "vmovdqu %%ymm5, 160(%[c])\n\t"
        "vmovdqu %%ymm6, 192(%[c])\n\t" "vmovdqu %%ymm7, 224(%[c])\n\t"
        : [a] "+r"(a), [b] "+r"(b), [n] "+r"(n)
        : [l1] "r"(l1), [l3] "r"(l3), [c] "r"(C), [one] "m"(one)
        : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
          "xmm9", "xmm12", "xmm13", "xmm14", "xmm15");
    const __m256i ws0 = _mm256_loadu_si256((const __m256i *)wsum16);
    const __m256i ws1 = _mm256_loadu_si256((const __m256i *)(wsum16 + 8));
    for (int r = 0; r < 4; r++) {
        const __m256i z = _mm256_set1_epi32(zp[r]);
        __m256i *c = (__m256i *)(C + r * 16);
        _mm256_storeu_si256(c, _mm256_sub_epi32(_mm256_loadu_si256(c), _mm256_mullo_epi32(z, ws0)));
        _mm256_storeu_si256(c + 1, _mm256_sub_epi32(_mm256_loadu_si256(c + 1), _mm256_mullo_epi32(z, ws1)));
    }
}

typedef struct {
    const uint8_t *xq; int M, Kp; const int8_t *Bp; int N, MB, mc0; size_t panel;
    const wb_epi_t *e;
} wb_dense_u7_job_t;

static void wb_dense_u7_chunk(void *p, long tb, long te) {
    const wb_dense_u7_job_t *j = (const wb_dense_u7_job_t *)p;
    const int Kp = j->Kp;
    for (long t = tb; t < te; t++) {
        int pn, mb;
        wb_epi_item(j->e, t, j->MB, (j->N + 15) / 16, 0, &mb, &pn);
        int n0 = pn * 16, nr = wb_imin(16, j->N - n0), m0 = j->mc0 + mb * 4;
        int mr = wb_imin(4, j->M - m0);
        int32_t C[4 * 16], ws[16] = {0};
        memcpy(ws, j->e->wsum + n0, sizeof(int32_t) * (size_t)nr);   /* the last panel may be short */
        const uint8_t *A = j->xq + (size_t)m0 * Kp;
        const int8_t *B = j->Bp + pn * j->panel;
        const int32_t *zp = j->e->zp + m0;
        switch (mr) {
            case 4: wb_avx2_u7_k4(A, Kp, B, Kp / 4, zp, ws, C); break;
            case 3: wb_avx2_u7_k3(A, Kp, B, Kp / 4, zp, ws, C); break;
            case 2: wb_avx2_u7_k2(A, Kp, B, Kp / 4, zp, ws, C); break;
            default: wb_avx2_u7_k1(A, Kp, B, Kp / 4, zp, ws, C); break;
        }
        wb_epilogue_centred_avx2(j->e, C, 16, m0, mr, n0, nr);
        wb_epi_activation(j->e, m0, mr, n0, nr);
    }
}

/* xq: u8 rows in [0, 127] against any int8 weights (act_bits=7 layers quantize onto that range,
 * and qmatmul checks it), or in [0, 255] against pair-bounded weights (the layer checked the
 * bound on its weights when it was built).  Blocked like wb_dense_avx2: rows in blocks whose
 * activations fit in a_block_bytes (reused from L2 across the weight panels). */
static void wb_dense_avx2_u7(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N,
                             const wb_epi_t *e, int nt, long a_block_bytes) {
    const int NP = (N + 15) / 16;
    const long mc = wb_avx2_block_rows(a_block_bytes, Kp);
    for (int mc0 = 0; mc0 < M; mc0 += (int)mc) {
        const int mcr = (int)(M - mc0 < mc ? M - mc0 : mc);
        const int MB = (mcr + 3) / 4;
        wb_dense_u7_job_t job = {xq, M, Kp, Bp, N, MB, mc0, (size_t)Kp * 16, e};
        wb_parallel_for(nt, (long)NP * MB, MB < 8 ? 8 : MB, wb_dense_u7_chunk, &job);
    }
}

#endif
