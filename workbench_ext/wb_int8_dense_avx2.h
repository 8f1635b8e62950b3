/* Dense int8 GEMM: the portable reference kernel and the AVX2 pair-product kernel. */
#ifndef WB_INT8_DENSE_AVX2_H
#define WB_INT8_DENSE_AVX2_H

#include "wb_epilogue.h"

/* ========================================================================================
 * Dense: portable
 * ====================================================================================== */
typedef struct { const uint8_t *xq; int M, Kp; const int8_t *w; int N, MB; const wb_epi_t *e; } wb_dense_portable_job_t;

static void wb_dense_portable_chunk(void *p, long tb, long te) {
    const wb_dense_portable_job_t *j = (const wb_dense_portable_job_t *)p;
    const int Kp = j->Kp;
    for (long t = tb; t < te; t++) {
        int nb, mb;
        wb_epi_item(j->e, t, j->MB, (j->N + 15) / 16, 0, &mb, &nb);
        int n0 = nb * 16, nr = wb_imin(16, j->N - n0), m0 = mb * 4, mr = wb_imin(4, j->M - m0);
        int32_t C[4 * 16];
        for (int r = 0; r < mr; r++) {
            const uint8_t *a = j->xq + (size_t)(m0 + r) * Kp;
            for (int jj = 0; jj < nr; jj++) {
                const int8_t *b = j->w + (size_t)(n0 + jj) * Kp;
                int32_t acc = 0;
                for (int k = 0; k < Kp; k++) acc += (int32_t)a[k] * (int32_t)b[k];
                C[r * 16 + jj] = acc;
            }
        }
        wb_epilogue(j->e, C, 16, m0, mr, n0, nr);
        wb_epi_activation(j->e, m0, mr, n0, nr);
    }
}

static void wb_dense_portable(const uint8_t *xq, int M, int Kp, const int8_t *w, int N,
                              const wb_epi_t *e, int nt) {
    const int NB = (N + 15) / 16, MB = (M + 3) / 4;
    const long total = (long)NB * MB;
    wb_dense_portable_job_t job = {xq, M, Kp, w, N, MB, e};
    wb_parallel_for(nt, total, wb_grain(total, nt, 4), wb_dense_portable_chunk, &job);
}

/* ========================================================================================
 * Dense: AVX2, pair-product form (Winograd 1968, "A new algorithm for inner product").
 * For x, w of even length:  sum_i (x[2i] + w[2i+1]) (x[2i+1] + w[2i])
 *                         = x.w + xi(x) + eta(w),  xi = sum_i x[2i] x[2i+1], eta likewise,
 * so x.w = that sum - xi - eta, exact in integers.  One vpmaddwd then covers 32 multiply-adds
 * (16 s16 pair products, each standing for two) instead of 16; the two s16 adds per vpmaddwd
 * run on the vector ALUs beside it.  On Zen 2, where vpmaddwd issues once per cycle, this
 * gives ~20 multiply-adds per cycle against ~15 for the plain vpmaddwd kernel.
 * Exactness: x = q - zp in [-255, 255], w in [-128, 127], so both factors lie in [-383, 382]
 * (s16), a pair of products is at most 2 * 383^2 (s32); sums wrap mod 2^32 and the corrected
 * result is the exact int32.  xi is per activation row, eta per weight column (pack time).
 * Activations: centred s16 [M][Kp] with each k-quad stored (x0, x2, x1, x3), so (x0, x2) and
 * (x1, x3) are the two 32-bit broadcasts.  Micro-kernel: MR(<=4) rows x 16 columns,
 * 8 accumulators + 4 weight vectors + 2 broadcasts + 2 temporaries = 16 ymm: the 4-row
 * kernel in assembly below, the 1-3 row tails (M % 4) from this macro.
 * ====================================================================================== */
#define WB_A2_ROW(r)                                                                          \
    if (mr_c > r) {                                                                           \
        int32_t ae, ao;                                                                       \
        memcpy(&ae, A + r * lda + 4 * (size_t)q, 4);                                          \
        memcpy(&ao, A + r * lda + 4 * (size_t)q + 2, 4);                                      \
        const __m256i xe = _mm256_set1_epi32(ae), xo = _mm256_set1_epi32(ao);                 \
        c##r##0 = _mm256_add_epi32(c##r##0, _mm256_madd_epi16(_mm256_add_epi16(xe, wo0),      \
                                                              _mm256_add_epi16(xo, we0)));    \
        c##r##1 = _mm256_add_epi32(c##r##1, _mm256_madd_epi16(_mm256_add_epi16(xe, wo1),      \
                                                              _mm256_add_epi16(xo, we1)));    \
    }
#define WB_A2_STORE(r)                                                                        \
    if (mr_c > r) {                                                                           \
        const __m256i x = _mm256_set1_epi32(xi[r]);                                           \
        _mm256_storeu_si256((__m256i *)(C + r * 16), _mm256_sub_epi32(_mm256_sub_epi32(c##r##0, x), eta0)); \
        _mm256_storeu_si256((__m256i *)(C + r * 16 + 8), _mm256_sub_epi32(_mm256_sub_epi32(c##r##1, x), eta1)); \
    }
#define WB_AVX2_DENSE_KERNEL(MR)                                                              \
WB_AVX2 static void wb_avx2_dense_k##MR(const int16_t *A, size_t lda, const int16_t *B,       \
                                        int kquads, const int32_t *xi, const int32_t *eta,    \
                                        int32_t *C) {                                         \
    const int mr_c = MR;                                                                      \
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00; \
    for (int q = 0; q < kquads; q++) {                                                        \
        const __m256i *b = (const __m256i *)(B + (size_t)q * 64);                             \
        const __m256i wo0 = _mm256_loadu_si256(b), we0 = _mm256_loadu_si256(b + 1);           \
        const __m256i wo1 = _mm256_loadu_si256(b + 2), we1 = _mm256_loadu_si256(b + 3);       \
        WB_A2_ROW(0) WB_A2_ROW(1) WB_A2_ROW(2)                                                \
    }                                                                                         \
    const __m256i eta0 = _mm256_loadu_si256((const __m256i *)eta);                            \
    const __m256i eta1 = _mm256_loadu_si256((const __m256i *)(eta + 8));                      \
    WB_A2_STORE(0) WB_A2_STORE(1) WB_A2_STORE(2)                                              \
}
WB_AVX2_DENSE_KERNEL(1)
WB_AVX2_DENSE_KERNEL(2)
WB_AVX2_DENSE_KERNEL(3)

/* The 4-row kernel in assembly: GCC folds the four weight vectors into memory operands of
 * every vpaddw (24 loads per 8 vpmaddwd, past the 2 loads/cycle of the core) and spills two
 * accumulators, which left it no faster than the plain kernel.  Here the weights stay in
 * ymm8-11 (12 loads per 8 vpmaddwd).  ymm0-7: accumulators (row r: ymm2r, ymm2r+1),
 * ymm12/13: the (x0, x2) / (x1, x3) broadcasts, ymm14/15: temporaries. */
#define WB_A2_ASM_ROW(ra, c0, c1)                                                            \
    "vpbroadcastd " ra ", %%ymm12\n\t"                                                       \
    "vpbroadcastd 4" ra ", %%ymm13\n\t"                                                      \
    "vpaddw %%ymm8, %%ymm12, %%ymm14\n\t"                                                    \
    "vpaddw %%ymm9, %%ymm13, %%ymm15\n\t"                                                    \
    "vpmaddwd %%ymm15, %%ymm14, %%ymm14\n\t"                                                 \
    "vpaddd %%ymm14, %%" c0 ", %%" c0 "\n\t"                                                 \
    "vpaddw %%ymm10, %%ymm12, %%ymm14\n\t"                                                   \
    "vpaddw %%ymm11, %%ymm13, %%ymm15\n\t"                                                   \
    "vpmaddwd %%ymm15, %%ymm14, %%ymm14\n\t"                                                 \
    "vpaddd %%ymm14, %%" c1 ", %%" c1 "\n\t"
/* The accumulators ymm0-7 of both 4-row assembly kernels (this one and the 7-bit one) to zero. */
#define WB_ASM_ZERO_YMM0_7                                                                    \
    "vpxor %%ymm0, %%ymm0, %%ymm0\n\t" "vpxor %%ymm1, %%ymm1, %%ymm1\n\t"                     \
    "vpxor %%ymm2, %%ymm2, %%ymm2\n\t" "vpxor %%ymm3, %%ymm3, %%ymm3\n\t"                     \
    "vpxor %%ymm4, %%ymm4, %%ymm4\n\t" "vpxor %%ymm5, %%ymm5, %%ymm5\n\t"                     \
    "vpxor %%ymm6, %%ymm6, %%ymm6\n\t" "vpxor %%ymm7, %%ymm7, %%ymm7\n\t"

WB_AVX2 static void wb_avx2_dense_k4(const int16_t *A, size_t lda, const int16_t *B, int kquads,
                                     const int32_t *xi, const int32_t *eta, int32_t *C) {
    const int16_t *a = A;
    const int16_t *b = B;
    long n = kquads;
    const long l1 = (long)lda * 2, l3 = 3 * (long)lda * 2;
    __asm__ volatile(
        WB_ASM_ZERO_YMM0_7
        "test %[n], %[n]\n\t"
        "jle 2f\n\t"
        "1:\n\t"
        "vmovdqu (%[b]), %%ymm8\n\t"
        "vmovdqu 32(%[b]), %%ymm9\n\t"
        "vmovdqu 64(%[b]), %%ymm10\n\t"
        "vmovdqu 96(%[b]), %%ymm11\n\t"
        WB_A2_ASM_ROW("(%[a])", "ymm0", "ymm1")
        WB_A2_ASM_ROW("(%[a],%[l1],1)", "ymm2", "ymm3")
        WB_A2_ASM_ROW("(%[a],%[l1],2)", "ymm4", "ymm5")
        WB_A2_ASM_ROW("(%[a],%[l3],1)", "ymm6", "ymm7")
        "add $8, %[a]\n\t"
        "add $128, %[b]\n\t"
        "dec %[n]\n\t"
        "jnz 1b\n\t"
        "2:\n\t"
        "vmovdqu (%[eta]), %%ymm8\n\t"
        "vmovdqu 32(%[eta]), %%ymm9\n\t"
        "vpbroadcastd (%[xi]), %%ymm12\n\t"
        "vpsubd %%ymm12, %%ymm0, %%ymm0\n\t" "vpsubd %%ymm8, %%ymm0, %%ymm0\n\t"
        "vpsubd %%ymm12, %%ymm1, %%ymm1\n\t" "vpsubd %%ymm9, %%ymm1, %%ymm1\n\t"
        "vpbroadcastd 4(%[xi]), %%ymm12\n\t"
        "vpsubd %%ymm12, %%ymm2, %%ymm2\n\t" "vpsubd %%ymm8, %%ymm2, %%ymm2\n\t"
        "vpsubd %%ymm12, %%ymm3, %%ymm3\n\t" "vpsubd %%ymm9, %%ymm3, %%ymm3\n\t"
        "vpbroadcastd 8(%[xi]), %%ymm12\n\t"
        "vpsubd %%ymm12, %%ymm4, %%ymm4\n\t" "vpsubd %%ymm8, %%ymm4, %%ymm4\n\t"
        "vpsubd %%ymm12, %%ymm5, %%ymm5\n\t" "vpsubd %%ymm9, %%ymm5, %%ymm5\n\t"
        "vpbroadcastd 12(%[xi]), %%ymm12\n\t"
        "vpsubd %%ymm12, %%ymm6, %%ymm6\n\t" "vpsubd %%ymm8, %%ymm6, %%ymm6\n\t"
        "vpsubd %%ymm12, %%ymm7, %%ymm7\n\t" "vpsubd %%ymm9, %%ymm7, %%ymm7\n\t"
        "vmovdqu %%ymm0, (%[c])\n\t"   "vmovdqu %%ymm1, 32(%[c])\n\t"
        "vmovdqu %%ymm2, 64(%[c])\n\t" "vmovdqu %%ymm3, 96(%[c])\n\t"
        "vmovdqu %%ymm4, 128(%[c])\n\t" "vmovdqu %%ymm5, 160(%[c])\n\t"
        "vmovdqu %%ymm6, 192(%[c])\n\t" "vmovdqu %%ymm7, 224(%[c])\n\t"
        : [a] "+r"(a), [b] "+r"(b), [n] "+r"(n)
        : [l1] "r"(l1), [l3] "r"(l3), [xi] "r"(xi), [eta] "r"(eta), [c] "r"(C)
        : "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
          "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

#define WB_AVX2_MR 4

/* u8 rows Xq[M][Kp] -> centred s16 rows x = q - zp[m] in the kernel's (x0, x2, x1, x3) quad
 * order, and xi[m] = sum_i x[m, 2i] x[m, 2i+1] (mod 2^32, like the kernel's sums).  Centring
 * here makes the kernel's result sum_k (q - zp) w itself, so the epilogue has no zero-point
 * term; the padding columns become -zp, harmless because their weights are 0 and their
 * xi share cancels the kernel's. */
WB_AVX2 static void wb_widen_pairs_avx2(const uint8_t *q, int M, int Kp, const int32_t *zp,
                                        int16_t *out, int32_t *xi) {
    const __m256i order = _mm256_setr_epi8(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15,
                                           0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15);
    for (int m = 0; m < M; m++) {
        const uint8_t *r = q + (size_t)m * Kp;
        int16_t *o = out + (size_t)m * Kp;
        const __m256i z = _mm256_set1_epi16((short)zp[m]);
        __m256i s = _mm256_setzero_si256();
        for (int k = 0; k < Kp; k += 16) {   /* Kp is a multiple of 64 */
            const __m256i v = _mm256_shuffle_epi8(_mm256_sub_epi16(
                _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(r + k))), z), order);
            _mm256_storeu_si256((__m256i *)(o + k), v);
            /* dword 2j of v is (x0, x2), 2j+1 is (x1, x3): against the neighbour-swapped v,
             * vpmaddwd gives x0 x1 + x2 x3 in both; keep the even dwords */
            const __m256i p = _mm256_madd_epi16(v, _mm256_shuffle_epi32(v, 0xB1));
            s = _mm256_add_epi32(s, _mm256_blend_epi32(p, _mm256_setzero_si256(), 0xAA));
        }
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
        xi[m] = _mm_cvtsi128_si32(h);
    }
}

typedef struct {
    const int16_t *xs; const int32_t *xi; int M, Kp; const int16_t *Bp; const int32_t *eta;
    int N, MB, mc0; size_t panel; const wb_epi_t *e;
} wb_dense_avx2_job_t;

static void wb_dense_avx2_chunk(void *p, long tb, long te) {
    const wb_dense_avx2_job_t *j = (const wb_dense_avx2_job_t *)p;
    const int Kp = j->Kp;
    for (long t = tb; t < te; t++) {
        int pn, mb;
        wb_epi_item(j->e, t, j->MB, (j->N + 15) / 16, 0, &mb, &pn);
        int n0 = pn * 16, nr = wb_imin(16, j->N - n0), m0 = j->mc0 + mb * WB_AVX2_MR;
        int mr = wb_imin(WB_AVX2_MR, j->M - m0);
        int32_t C[WB_AVX2_MR * 16];
        const int16_t *A = j->xs + (size_t)m0 * Kp, *B = j->Bp + pn * j->panel;
        const int32_t *x = j->xi + m0, *w = j->eta + n0;
        switch (mr) {
            case 4: wb_avx2_dense_k4(A, Kp, B, Kp / 4, x, w, C); break;
            case 3: wb_avx2_dense_k3(A, Kp, B, Kp / 4, x, w, C); break;
            case 2: wb_avx2_dense_k2(A, Kp, B, Kp / 4, x, w, C); break;
            default: wb_avx2_dense_k1(A, Kp, B, Kp / 4, x, w, C); break;
        }
        wb_epilogue_centred_avx2(j->e, C, 16, m0, mr, n0, nr);
        wb_epi_activation(j->e, m0, mr, n0, nr);
    }
}

/* Rows are processed in blocks of MC (a multiple of 4) whose int16 activations fit in
 * a_block_bytes (L2-sized), so a block of A is reused from L2 across all weight panels; the
 * weights stream once per block.  Inside a block: parallel over (panel, 4-row tile). */
/* Rows per block: as many whole 4-row tiles of row_bytes each as fit in a_block_bytes, >= 4. */
static inline long wb_avx2_block_rows(long a_block_bytes, long row_bytes) {
    long mc = a_block_bytes / row_bytes / WB_AVX2_MR * WB_AVX2_MR;
    return mc < WB_AVX2_MR ? WB_AVX2_MR : mc;
}

static void wb_dense_avx2(const int16_t *xs, const int32_t *xi, int M, int Kp, const int16_t *Bp,
                          const int32_t *eta, int N, const wb_epi_t *e, int nt, long a_block_bytes) {
    const int NP = (N + 15) / 16;
    const long mc = wb_avx2_block_rows(a_block_bytes, (long)Kp * 2);
    for (int mc0 = 0; mc0 < M; mc0 += (int)mc) {
        const int mcr = (int)(M - mc0 < mc ? M - mc0 : mc);
        const int MB = (mcr + WB_AVX2_MR - 1) / WB_AVX2_MR;
        wb_dense_avx2_job_t job = {xs, xi, M, Kp, Bp, eta, N, MB, mc0, (size_t)Kp * 16, e};
        /* a panel's row tiles (at least 8 tiles) per chunk: a thread the machine slows down
         * (a shared host) takes fewer panels instead of holding the other at the end */
        wb_parallel_for(nt, (long)NP * MB, MB < 8 ? 8 : MB, wb_dense_avx2_chunk, &job);
    }
}

#endif
