/* u8 x s8 -> s32 GEMM kernels (dense and 1x4 block-sparse) for workbench_ext.int8.
 *
 * Conventions: the quantized activations are Xq[M][Kp] (u8, Kp = K rounded up to 64, zero
 * padded), weights are packed per path at construction.  All paths produce the exact int32
 * sum_k (q[m,k] - zp[m]) * w[n,k] for a tile (most paths as sum q w, corrected by zp * wsum in
 * wb_epilogue, wb_common.h; the AVX2 dense path centres its activations) and the same float
 * epilogue, so every path computes bit-identical outputs.
 *
 * Dense packed layouts (N padded with zero rows):
 *   portable     int8  [N][Kp]                       (row-major, K padded)
 *   avx2         int16 [ceil(N/16)][Kp/4][2][2][8][2] (pair-product form, see the AVX2 kernel)
 *   avx512_vnni  int8  [NP][Kp/4][16][4]             (4 k per s32 lane for vpdpbusd)
 *   amx          same as avx512_vnni with NP even; a 16-row slab [16 kq][16 n x 4] of a panel
 *                is exactly one B tile (16 rows x 64 bytes) for TDPBUSD.
 * Sparse: CSR of 1x4 blocks (row_ptr[N+1], col[nnzb] = k/4, vals[nnzb][4]); see int8.pyx.
 *
 * Executed on the development machines: portable and AVX2 (AMD EPYC Zen 2 and Zen 3), AVX-512
 * VNNI (Zen 5).  The AMX code is compiled into every build and dispatched only on CPUs that
 * report the features; it is checked against a scalar emulation of its intrinsics
 * (testing/emulate_isa.c) on every machine.
 */
#ifndef WB_INT8_H
#define WB_INT8_H

#include "wb_common.h"

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
                _mm512_mask_storeu_ps(e->y + (size_t)m * N + n0 + j, k, _mm512_add_ps(f, _mm512_maskz_loadu_ps(k, bias + j)));
            }
        }
    }
}
#define WB_DENSE_AVX512_EPILOGUE wb_epilogue_avx512
#else
#define WB_DENSE_AVX512_EPILOGUE wb_epilogue
#endif

/* ========================================================================================
 * Packing (construction time)
 * ====================================================================================== */
static void wb_wsum(const int8_t *w, int N, int K, int32_t *wsum) {
    for (int n = 0; n < N; n++) {
        int32_t s = 0;
        for (int k = 0; k < K; k++) s += w[(size_t)n * K + k];
        wsum[n] = s;
    }
}

static void wb_pack_dense_portable(const int8_t *w, int N, int K, int Kp, int8_t *out) {
    memset(out, 0, (size_t)N * Kp);
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * Kp, w + (size_t)n * K, (size_t)K);
}

/* out: int16 [NP16][Kp/4][2 halves][odd, even][8 columns][2], zero-filled by the caller; for
 * column n of half h and k-quad q: odd = (w[4q+1], w[4q+3]), even = (w[4q], w[4q+2]) -- the
 * layout of the AVX2 pair-product kernel below.  eta[n] = sum_i w[2i] w[2i+1] (NP16*16 entries,
 * zero past N) is the weight-side correction term of that kernel. */
static void wb_pack_dense_avx2(const int8_t *w, int N, int K, int Kp, int16_t *out, int32_t *eta) {
    const size_t panel = (size_t)Kp * 16;
    for (int n = 0; n < N; n++) {
        const int8_t *wr = w + (size_t)n * K;
        int16_t *pp = out + (n / 16) * panel + ((n % 16) / 8) * 32 + (n % 8) * 2;
        int32_t t = 0;
        for (int k = 0; k < K; k++) {
            const int q = k / 4, i = k % 4;
            /* odd k to the first 16 s16 of the half, even k to the second */
            pp[(size_t)q * 64 + (i & 1 ? 0 : 16) + (i >> 1)] = wr[k];
            if (i & 1) t += (int32_t)wr[k - 1] * wr[k];
        }
        eta[n] = t;
    }
}

/* out: int8 [NP][Kp/4][16][4], zero-filled by the caller */
static void wb_pack_dense_vnni(const int8_t *w, int N, int K, int Kp, int8_t *out) {
    const size_t panel = (size_t)(Kp / 4) * 64;
    for (int n = 0; n < N; n++) {
        int p = n / 16, j = n % 16;
        for (int k = 0; k < K; k++)
            out[p * panel + (size_t)(k / 4) * 64 + j * 4 + (k & 3)] = w[(size_t)n * K + k];
    }
}

/* Static (per-tensor, calibrated ahead of time) u8 quantization of rows into q[M][Kp]: the
 * same formula as wb_quantize_static (q = clamp(rint(x * (1/scale)) + zp, 0, 255)), pad
 * columns zero. */
static void wb_quantize_rows_static(const float *x, int M, int K, int Kp, float scale, int32_t zp,
                                    uint8_t *q, int isa, int nt) {
    nt = wb_threads(nt);
    const float inv = 1.0f / scale, zpf = (float)zp;
    #pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && (long)M * K > 32768)
    for (int m = 0; m < M; m++) {
        const float *r = x + (size_t)m * K;
        uint8_t *o = q + (size_t)m * Kp;
        if (isa >= WB_ISA_AVX2) wb_quant_apply_avx2(r, (size_t)K, inv, zpf, o);
        else for (int k = 0; k < K; k++) o[k] = wb_q1(r[k], inv, zpf);
        memset(o + K, 0, (size_t)(Kp - K));
    }
}

/* ========================================================================================
 * Dense: portable
 * ====================================================================================== */
static void wb_dense_portable(const uint8_t *xq, int M, int Kp, const int8_t *w, int N,
                              const wb_epi_t *e, int nt) {
    const int NB = (N + 15) / 16, MB = (M + 3) / 4;
    const long total = (long)NB * MB;
    #pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && total > 1)
    for (long t = 0; t < total; t++) {
        int nb = (int)(t / MB), mb = (int)(t % MB);
        int n0 = nb * 16, nr = wb_imin(16, N - n0), m0 = mb * 4, mr = wb_imin(4, M - m0);
        int32_t C[4 * 16];
        for (int r = 0; r < mr; r++) {
            const uint8_t *a = xq + (size_t)(m0 + r) * Kp;
            for (int j = 0; j < nr; j++) {
                const int8_t *b = w + (size_t)(n0 + j) * Kp;
                int32_t acc = 0;
                for (int k = 0; k < Kp; k++) acc += (int32_t)a[k] * (int32_t)b[k];
                C[r * 16 + j] = acc;
            }
        }
        wb_epilogue(e, C, 16, m0, mr, n0, nr);
        wb_epi_activation(e, m0, mr, n0, nr);
    }
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
WB_AVX2 static void wb_avx2_dense_k4(const int16_t *A, size_t lda, const int16_t *B, int kquads,
                                     const int32_t *xi, const int32_t *eta, int32_t *C) {
    const int16_t *a = A;
    const int16_t *b = B;
    long n = kquads;
    const long l1 = (long)lda * 2, l3 = 3 * (long)lda * 2;
    __asm__ volatile(
        "vpxor %%ymm0, %%ymm0, %%ymm0\n\t"
        "vpxor %%ymm1, %%ymm1, %%ymm1\n\t"
        "vpxor %%ymm2, %%ymm2, %%ymm2\n\t"
        "vpxor %%ymm3, %%ymm3, %%ymm3\n\t"
        "vpxor %%ymm4, %%ymm4, %%ymm4\n\t"
        "vpxor %%ymm5, %%ymm5, %%ymm5\n\t"
        "vpxor %%ymm6, %%ymm6, %%ymm6\n\t"
        "vpxor %%ymm7, %%ymm7, %%ymm7\n\t"
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

/* Rows are processed in blocks of MC (a multiple of 4) whose int16 activations fit in
 * a_block_bytes (L2-sized), so a block of A is reused from L2 across all weight panels; the
 * weights stream once per block.  Inside a block: parallel over (panel, 4-row tile). */
static void wb_dense_avx2(const int16_t *xs, const int32_t *xi, int M, int Kp, const int16_t *Bp,
                          const int32_t *eta, int N, const wb_epi_t *e, int nt, long a_block_bytes) {
    const int NP = (N + 15) / 16;
    const size_t panel = (size_t)Kp * 16;
    long mc = a_block_bytes / ((long)Kp * 2);
    mc = mc / WB_AVX2_MR * WB_AVX2_MR;
    if (mc < WB_AVX2_MR) mc = WB_AVX2_MR;
    for (int mc0 = 0; mc0 < M; mc0 += (int)mc) {
        const int mcr = (int)(M - mc0 < mc ? M - mc0 : mc);
        const int MB = (mcr + WB_AVX2_MR - 1) / WB_AVX2_MR;
        const long total = (long)NP * MB;
        /* dynamic, a panel's row tiles (at least 8 tiles) per grab: a thread the machine slows
         * down (a shared host) takes fewer panels instead of holding the other at the end */
        const int chunk = MB < 8 ? 8 : MB;
        #pragma omp parallel for schedule(dynamic, chunk) num_threads(nt) if (nt > 1 && total > 1)
        for (long t = 0; t < total; t++) {
            int p = (int)(t / MB), mb = (int)(t % MB);
            int n0 = p * 16, nr = wb_imin(16, N - n0), m0 = mc0 + mb * WB_AVX2_MR;
            int mr = wb_imin(WB_AVX2_MR, M - m0);
            int32_t C[WB_AVX2_MR * 16];
            const int16_t *A = xs + (size_t)m0 * Kp, *B = Bp + p * panel;
            const int32_t *x = xi + m0, *w = eta + n0;
            switch (mr) {
                case 4: wb_avx2_dense_k4(A, Kp, B, Kp / 4, x, w, C); break;
                case 3: wb_avx2_dense_k3(A, Kp, B, Kp / 4, x, w, C); break;
                case 2: wb_avx2_dense_k2(A, Kp, B, Kp / 4, x, w, C); break;
                default: wb_avx2_dense_k1(A, Kp, B, Kp / 4, x, w, C); break;
            }
            wb_epilogue_centred_avx2(e, C, 16, m0, mr, n0, nr);
            wb_epi_activation(e, m0, mr, n0, nr);
        }
    }
}

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

/* Bp has an even number of 16-column panels (shared with AMX); items = 8 rows x 32 columns. */
static void wb_dense_vnni(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N,
                          const wb_epi_t *e, int nt) {
    const int NP2 = (N + 31) / 32, MB = (M + 7) / 8;
    const long total = (long)NP2 * MB;
    const size_t panel = (size_t)(Kp / 4) * 64;
    #pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && total > 1)
    for (long t = 0; t < total; t++) {
        int p2 = (int)(t / MB), mb = (int)(t % MB);
        int n0 = p2 * 32, nr = wb_imin(32, N - n0), m0 = mb * 8, mr = wb_imin(8, M - m0);
        int32_t C[8 * 32];
        const uint8_t *A = xq + (size_t)m0 * Kp;
        const int8_t *B = Bp + (size_t)(2 * p2) * panel;
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
        WB_DENSE_AVX512_EPILOGUE(e, C, 32, m0, mr, n0, nr);
        wb_epi_activation(e, m0, mr, n0, nr);
    }
}

/* ========================================================================================
 * Dense: AMX (TDPBUSD).  xq must have Mp = M rounded up to 16 rows (zero rows), B packed as
 * for VNNI with an even number of 16-column panels.  Each work item = 32 rows x 32 columns:
 * 2x2 tiles, tmm0-3 C, tmm4-5 A (u8), tmm6-7 B (s8, VNNI layout), all 16 rows x 64 bytes; a last
 * item with <= 16 valid rows uses only the first row tile.  Threads take contiguous item ranges
 * in column-panel-major order, so a panel pair's B (2 x Kp x 16 bytes) stays in L1 while the row
 * blocks pass.  Tile configuration is per thread, so it is loaded inside the parallel region.
 *
 * Two workers, same results (the emulation test checks both):
 *   pipelined (default)  the previous item's epilogue (and GELU) runs a few rows per K chunk,
 *                        between this item's TDPBUSDs, so the AVX-512 work overlaps the tile
 *                        unit's instead of following it (oneDNN's brgemm calls this
 *                        "interleaved stores"); loads ordered A0 B0 dp B1 dp A1 dp dp so the
 *                        first TDPBUSD waits for two loads, not four; A prefetched two chunks
 *                        ahead into L1 (its 16 rows are Kp bytes apart, one line each), the next
 *                        panel pair's B into L2 while the first row block of a pair runs.  At
 *                        K = 768 the 12 chunks' 48 TDPBUSDs take ~770 cycles and the epilogue of
 *                        1024 outputs ~300 (more with GELU), so run one after the other the
 *                        tile unit idles for a third of the time.
 *   plain                load, multiply, store, then the epilogue (the first version; kept for
 *                        the A/B: workbench_ext.int8._set_amx_pipelined(0)).
 * NOT executed on the development machines (no AMX there): written to Intel's AMX tuning advice
 * and checked exactly by the emulation test; its speed is measured where AMX is.
 * ====================================================================================== */
typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} wb_tilecfg_t;

static int wb_amx_pipelined = 1;

WB_AMX static void wb_amx_config(void) {
    wb_tilecfg_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette_id = 1;
    for (int i = 0; i < 8; i++) { cfg.rows[i] = 16; cfg.colsb[i] = 64; }
    _tile_loadconfig(&cfg);
}

/* One work item: rows m0..m0+mr-1, columns n0..n0+nr-1, its A rows and B panels. */
typedef struct {
    int m0, mr, n0, nr, mb;
    const uint8_t *A0;
    const int8_t *B0;
} wb_amx_item_t;

static inline wb_amx_item_t wb_amx_item(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N,
                                        long t, int MB) {
    wb_amx_item_t it;
    const int p2 = (int)(t / MB);
    it.mb = (int)(t % MB);
    it.m0 = it.mb * 32;
    it.mr = wb_imin(32, M - it.m0);
    it.n0 = p2 * 32;
    it.nr = wb_imin(32, N - it.n0);
    it.A0 = xq + (size_t)it.m0 * Kp;
    it.B0 = Bp + (size_t)(2 * p2) * (size_t)(Kp / 4) * 64;
    return it;
}

/* Epilogue (and activation) of rows r0..r1-1 of an item whose s32 sums are in C[32][32]. */
WB_AMX static inline void wb_amx_epi_rows(const wb_epi_t *e, const int32_t *C, const wb_amx_item_t *it,
                                          int r0, int r1) {
    if (r1 > it->mr) r1 = it->mr;
    if (r0 >= r1) return;
    WB_DENSE_AVX512_EPILOGUE(e, C + (size_t)r0 * 32, 32, it->m0 + r0, r1 - r0, it->n0, it->nr);
    wb_epi_activation(e, it->m0 + r0, r1 - r0, it->n0, it->nr);
}

WB_AMX static void wb_amx_worker_plain(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N,
                                       const wb_epi_t *e, long t0, long t1) {
    wb_amx_config();
    const int MB = (M + 31) / 32, chunks = Kp / 64;
    const size_t panel = (size_t)(Kp / 4) * 64;
    int32_t C[32 * 32];
    for (long t = t0; t < t1; t++) {
        const wb_amx_item_t it = wb_amx_item(xq, M, Kp, Bp, N, t, MB);
        const uint8_t *A0 = it.A0, *A1 = A0 + (size_t)16 * Kp;
        const int8_t *B0 = it.B0, *B1 = B0 + panel;
        _tile_zero(0);
        _tile_zero(1);
        if (it.mr > 16) {   /* rows m0+16.. exist in xq (padded to a multiple of 16 rows) */
            _tile_zero(2);
            _tile_zero(3);
            for (int c = 0; c < chunks; c++) {
                _tile_loadd(4, A0 + (size_t)c * 64, Kp);
                _tile_loadd(6, B0 + (size_t)c * 1024, 64);
                _tile_loadd(7, B1 + (size_t)c * 1024, 64);
                _tile_loadd(5, A1 + (size_t)c * 64, Kp);
                _tile_dpbusd(0, 4, 6);
                _tile_dpbusd(1, 4, 7);
                _tile_dpbusd(2, 5, 6);
                _tile_dpbusd(3, 5, 7);
            }
            _tile_stored(2, C + 16 * 32, 128);
            _tile_stored(3, C + 16 * 32 + 16, 128);
        } else {
            for (int c = 0; c < chunks; c++) {
                _tile_loadd(4, A0 + (size_t)c * 64, Kp);
                _tile_loadd(6, B0 + (size_t)c * 1024, 64);
                _tile_loadd(7, B1 + (size_t)c * 1024, 64);
                _tile_dpbusd(0, 4, 6);
                _tile_dpbusd(1, 4, 7);
            }
        }
        _tile_stored(0, C, 128);
        _tile_stored(1, C + 16, 128);
        wb_amx_epi_rows(e, C, &it, 0, it.mr);
    }
    _tile_release();
}

/* Prefetch one 64-byte-wide column strip of `rows` rows `stride` bytes apart. */
static inline void wb_prefetch_rows(const void *p, int rows, size_t stride, int hint_l2) {
    const char *q = (const char *)p;
    for (int r = 0; r < rows; r++) {
        if (hint_l2) _mm_prefetch(q + (size_t)r * stride, _MM_HINT_T1);
        else _mm_prefetch(q + (size_t)r * stride, _MM_HINT_T0);
    }
}

WB_AMX static void wb_amx_worker_pipelined(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N,
                                           const wb_epi_t *e, long t0, long t1) {
    wb_amx_config();
    const int MB = (M + 31) / 32, chunks = Kp / 64;
    const size_t panel = (size_t)(Kp / 4) * 64;
    int32_t C[2][32 * 32];           /* this item's sums, the previous item's (epilogue pending) */
    wb_amx_item_t prev;
    memset(&prev, 0, sizeof prev);
    int have_prev = 0, cur = 0;
    for (long t = t0; t < t1; t++) {
        const wb_amx_item_t it = wb_amx_item(xq, M, Kp, Bp, N, t, MB);
        const int has_next = t + 1 < t1;
        const wb_amx_item_t nx = has_next ? wb_amx_item(xq, M, Kp, Bp, N, t + 1, MB) : it;
        const uint8_t *A0 = it.A0, *A1 = A0 + (size_t)16 * Kp;
        const int8_t *B0 = it.B0, *B1 = B0 + panel;
        const int two = it.mr > 16;    /* rows m0+16.. exist in xq (padded to 16 rows) */
        /* the next panel pair's B, into L2 during this pair's first row block */
        const int8_t *Bn = (it.mb == 0 && t + MB < t1) ? B0 + 2 * panel : NULL;
        const int32_t *Cp = C[cur ^ 1];
        const int per = have_prev ? (prev.mr + chunks - 1) / chunks : 0;
        _tile_zero(0);
        _tile_zero(1);
        if (two) { _tile_zero(2); _tile_zero(3); }
        for (int c = 0; c < chunks; c++) {
            /* A two chunks ahead: this item's, or the next item's first chunks */
            const int g = c + 2;
            if (g < chunks) wb_prefetch_rows(A0 + (size_t)g * 64, two ? 32 : 16, (size_t)Kp, 0);
            else if (has_next && g - chunks < chunks)
                wb_prefetch_rows(nx.A0 + (size_t)(g - chunks) * 64, nx.mr > 16 ? 32 : 16, (size_t)Kp, 0);
            if (Bn) {
                wb_prefetch_rows(Bn + (size_t)c * 1024, 16, 64, 1);
                wb_prefetch_rows(Bn + panel + (size_t)c * 1024, 16, 64, 1);
            }
            _tile_loadd(4, A0 + (size_t)c * 64, Kp);
            _tile_loadd(6, B0 + (size_t)c * 1024, 64);
            _tile_dpbusd(0, 4, 6);
            _tile_loadd(7, B1 + (size_t)c * 1024, 64);
            _tile_dpbusd(1, 4, 7);
            if (two) {
                _tile_loadd(5, A1 + (size_t)c * 64, Kp);
                _tile_dpbusd(2, 5, 6);
                _tile_dpbusd(3, 5, 7);
            }
            /* a slice of the previous item's epilogue while these TDPBUSDs run */
            if (per) wb_amx_epi_rows(e, Cp, &prev, c * per, (c + 1) * per);
        }
        int32_t *Cc = C[cur];
        _tile_stored(0, Cc, 128);
        _tile_stored(1, Cc + 16, 128);
        if (two) {
            _tile_stored(2, Cc + 16 * 32, 128);
            _tile_stored(3, Cc + 16 * 32 + 16, 128);
        }
        prev = it;
        have_prev = 1;
        cur ^= 1;
    }
    if (have_prev) wb_amx_epi_rows(e, C[cur ^ 1], &prev, 0, prev.mr);
    _tile_release();
}

static void wb_dense_amx(const uint8_t *xq, int M, int Kp, const int8_t *Bp, int N,
                         const wb_epi_t *e, int nt) {
    const int MB = (M + 31) / 32, NP2 = (N + 31) / 32;
    const long total = (long)NP2 * MB;
    const int pipelined = wb_amx_pipelined;
    if (nt > total) nt = (int)total;
    if (nt < 1) nt = 1;
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        int tid = omp_get_thread_num(), T = omp_get_num_threads();
#else
        int tid = 0, T = 1;
#endif
        long t0 = total * tid / T, t1 = total * (tid + 1) / T;
        if (t1 > t0) {
            if (pipelined) wb_amx_worker_pipelined(xq, M, Kp, Bp, N, e, t0, t1);
            else wb_amx_worker_plain(xq, M, Kp, Bp, N, e, t0, t1);
        }
    }
}

/* ========================================================================================
 * 1x4 block-sparse.  Work item = 16 rows (an m-tile) x up to 64 output columns; results are
 * gathered into C[16][64] and sent through the shared epilogue.
 * ====================================================================================== */
#define WB_SP_MT 16
#define WB_SP_NC 64

static void wb_sparse_portable(const uint8_t *xq, int M, int Kp, const int32_t *rp,
                               const int32_t *col, const int8_t *vals, int N,
                               const wb_epi_t *e, int nt) {
    const int MB = (M + WB_SP_MT - 1) / WB_SP_MT, NB = (N + WB_SP_NC - 1) / WB_SP_NC;
    const long total = (long)MB * NB;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && total > 1)
    for (long t = 0; t < total; t++) {
        int mb = (int)(t / NB), nb = (int)(t % NB);
        int m0 = mb * WB_SP_MT, mr = wb_imin(WB_SP_MT, M - m0);
        int n0 = nb * WB_SP_NC, nr = wb_imin(WB_SP_NC, N - n0);
        int32_t C[WB_SP_MT * WB_SP_NC];
        for (int r = 0; r < mr; r++) {
            const uint8_t *a = xq + (size_t)(m0 + r) * Kp;
            for (int j = 0; j < nr; j++) {
                int n = n0 + j;
                int32_t acc = 0;
                for (int b = rp[n]; b < rp[n + 1]; b++) {
                    const uint8_t *x = a + 4 * (size_t)col[b];
                    const int8_t *v = vals + 4 * (size_t)b;
                    acc += x[0] * v[0] + x[1] * v[1] + x[2] * v[2] + x[3] * v[3];
                }
                C[r * WB_SP_NC + j] = acc;
            }
        }
        wb_epilogue(e, C, WB_SP_NC, m0, mr, n0, nr);
        wb_epi_activation(e, m0, mr, n0, nr);
    }
}

/* Activations for the VNNI sparse kernel: u8 [MB][Kb][16][4]. */

/* AVX2: one output column n for 16 rows.  Each ymm of X holds 4 rows x 4 k (s16); vpmaddwd with
 * the broadcast 4 weights gives 2 partial sums per row, reduced with hadd at the end.
 * Returns rows 0-7 in *lo and rows 8-15 in *hi. */
WB_AVX2 static inline __attribute__((always_inline)) void
wb_avx2_sparse_col(const int16_t *Xt, const int32_t *col, const int16_t *vals16,
                   int b, const int b1, __m256i *lo, __m256i *hi) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    __m256i e0 = a0, e1 = a0, e2 = a0, e3 = a0;
    for (; b + 2 <= b1; b += 2) {
        int64_t wv, wv2;
        memcpy(&wv, vals16 + 4 * (size_t)b, 8);
        memcpy(&wv2, vals16 + 4 * (size_t)b + 4, 8);
        const __m256i w = _mm256_set1_epi64x(wv), w2 = _mm256_set1_epi64x(wv2);
        const int16_t *x = Xt + (size_t)col[b] * 64, *x2 = Xt + (size_t)col[b + 1] * 64;
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x)), w));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 16)), w));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 32)), w));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 48)), w));
        e0 = _mm256_add_epi32(e0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x2)), w2));
        e1 = _mm256_add_epi32(e1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x2 + 16)), w2));
        e2 = _mm256_add_epi32(e2, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x2 + 32)), w2));
        e3 = _mm256_add_epi32(e3, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x2 + 48)), w2));
    }
    if (b < b1) {
        int64_t wv;
        memcpy(&wv, vals16 + 4 * (size_t)b, 8);
        const __m256i w = _mm256_set1_epi64x(wv);
        const int16_t *x = Xt + (size_t)col[b] * 64;
        a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x)), w));
        a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 16)), w));
        a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 32)), w));
        a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 48)), w));
    }
    a0 = _mm256_add_epi32(a0, e0); a1 = _mm256_add_epi32(a1, e1);
    a2 = _mm256_add_epi32(a2, e2); a3 = _mm256_add_epi32(a3, e3);
    /* a0 lanes: r0p0 r0p1 r1p0 r1p1 | r2p0 r2p1 r3p0 r3p1 (rows 0-3), a1 rows 4-7, ... */
    *lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a0, a1), 0xD8);  /* rows 0..7 */
    *hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a2, a3), 0xD8);  /* rows 8..15 */
}

/* Two columns at once (independent accumulator sets give the ILP): one loop over the common
 * length, then the longer column's tail -- halves the unpredictable loop exits per column. */
static int wb_sparse_pair_cols = 1;

WB_AVX2 static inline __attribute__((always_inline)) void
wb_avx2_sparse_col2(const int16_t *Xt, const int32_t *col, const int16_t *vals16,
                    int b, const int b1, int d, const int d1, __m256i *out /* lo0 hi0 lo1 hi1 */) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    __m256i e0 = a0, e1 = a0, e2 = a0, e3 = a0;
    const int n = wb_imin(b1 - b, d1 - d);
#define WB_BLK(bb, A0, A1, A2, A3)                                                             \
    {                                                                                         \
        int64_t wv; memcpy(&wv, vals16 + 4 * (size_t)(bb), 8);                                \
        const __m256i w = _mm256_set1_epi64x(wv);                                             \
        const int16_t *x = Xt + (size_t)col[bb] * 64;                                         \
        A0 = _mm256_add_epi32(A0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x)), w));      \
        A1 = _mm256_add_epi32(A1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 16)), w)); \
        A2 = _mm256_add_epi32(A2, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 32)), w)); \
        A3 = _mm256_add_epi32(A3, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(x + 48)), w)); \
    }
    for (int i = 0; i < n; i++) {
        WB_BLK(b + i, a0, a1, a2, a3)
        WB_BLK(d + i, e0, e1, e2, e3)
    }
    for (b += n; b < b1; b++) WB_BLK(b, a0, a1, a2, a3)
    for (d += n; d < d1; d++) WB_BLK(d, e0, e1, e2, e3)
#undef WB_BLK
    out[0] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a0, a1), 0xD8);
    out[1] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a2, a3), 0xD8);
    out[2] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(e0, e1), 0xD8);
    out[3] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(e2, e3), 0xD8);
}

/* AVX2 sparse work item: rows m0..m0+15 (mr valid), columns n0..n0+nr-1.
 * K is processed in nch chunks (rpc[n * (nch + 1) + c] = first block of row n in chunk c) so the
 * 16-row activation slab of one chunk (<= 24 KB) stays in L1; per-column partial sums go to
 * Cacc.  Epilogue fused in registers (same float operations as wb_epilogue, so bit-identical),
 * then 8x8 transposes so the output rows are written contiguously. */
WB_AVX2 static void wb_avx2_sparse_tile(const int16_t *Xt, int m0, int mr, int n0, int nr,
                                        const int32_t *rpc, int nch, const int32_t *col,
                                        const int16_t *vals16, const wb_epi_t *e) {
    int32_t Cacc[WB_SP_NC * 16] __attribute__((aligned(32)));
    for (int c = 0; c < nch; c++) {
        int jj = 0;
        if (wb_sparse_pair_cols) {
            for (; jj + 2 <= nr; jj += 2) {
                const int32_t *r0 = rpc + (size_t)(n0 + jj) * (nch + 1) + c, *r1 = r0 + (nch + 1);
                __m256i v[4];
                wb_avx2_sparse_col2(Xt, col, vals16, r0[0], r0[1], r1[0], r1[1], v);
                __m256i *dst = (__m256i *)(Cacc + jj * 16);
                for (int i = 0; i < 4; i++) {
                    if (c) v[i] = _mm256_add_epi32(v[i], _mm256_load_si256(dst + i));
                    _mm256_store_si256(dst + i, v[i]);
                }
            }
        }
        for (; jj < nr; jj++) {
            const int32_t *rr = rpc + (size_t)(n0 + jj) * (nch + 1) + c;
            __m256i lo, hi;
            wb_avx2_sparse_col(Xt, col, vals16, rr[0], rr[1], &lo, &hi);
            __m256i *dst = (__m256i *)(Cacc + jj * 16);
            if (c) {
                lo = _mm256_add_epi32(lo, _mm256_load_si256(dst));
                hi = _mm256_add_epi32(hi, _mm256_load_si256(dst + 1));
            }
            _mm256_store_si256(dst, lo);
            _mm256_store_si256(dst + 1, hi);
        }
    }
    int32_t zpl[16];
    float xsl[16];
    for (int r = 0; r < 16; r++) {
        zpl[r] = r < mr ? e->zp[m0 + r] : 0;
        xsl[r] = r < mr ? e->xscale[m0 + r] : 0.0f;
    }
    const __m256i zp0 = _mm256_loadu_si256((const __m256i *)zpl), zp1 = _mm256_loadu_si256((const __m256i *)(zpl + 8));
    const __m256 xs0 = _mm256_loadu_ps(xsl), xs1 = _mm256_loadu_ps(xsl + 8);
    const int N = e->N;
    for (int jg = 0; jg < nr; jg += 8) {
        const int nc = wb_imin(8, nr - jg);
        __m256 R0[8], R1[8];
        for (int jj = 0; jj < 8; jj++) {
            if (jj >= nc) { R0[jj] = _mm256_setzero_ps(); R1[jj] = R0[jj]; continue; }
            const int n = n0 + jg + jj;
            __m256i lo = _mm256_load_si256((const __m256i *)(Cacc + (jg + jj) * 16));
            __m256i hi = _mm256_load_si256((const __m256i *)(Cacc + (jg + jj) * 16 + 8));
            const __m256i ws = _mm256_set1_epi32(e->wsum[n]);
            lo = _mm256_sub_epi32(lo, _mm256_mullo_epi32(zp0, ws));
            hi = _mm256_sub_epi32(hi, _mm256_mullo_epi32(zp1, ws));
            if (e->yi) {
                R0[jj] = _mm256_castsi256_ps(lo);
                R1[jj] = _mm256_castsi256_ps(hi);
            } else {
                const __m256 wsc = _mm256_set1_ps(e->wscale[n]), bb = _mm256_set1_ps(e->bias[n]);
                R0[jj] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(lo), _mm256_mul_ps(xs0, wsc)), bb);
                R1[jj] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(hi), _mm256_mul_ps(xs1, wsc)), bb);
            }
        }
        void *out = e->yi ? (void *)e->yi : (void *)e->y;
        wb_store_8x8_t(R0, mr, nc, out, (size_t)N, (size_t)m0 * N + n0 + jg);
        if (mr > 8) wb_store_8x8_t(R1, mr - 8, nc, out, (size_t)N, (size_t)(m0 + 8) * N + n0 + jg);
    }
}

static void wb_sparse_avx2(const int16_t *xt, int M, int Kb, const int32_t *rpc, int nch,
                           const int32_t *col, const int16_t *vals16, int N, const wb_epi_t *e, int nt) {
    const int MB = (M + WB_SP_MT - 1) / WB_SP_MT, NB = (N + WB_SP_NC - 1) / WB_SP_NC;
    const long total = (long)MB * NB;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && total > 1)
    for (long t = 0; t < total; t++) {
        int mb = (int)(t / NB), nb = (int)(t % NB);
        int m0 = mb * WB_SP_MT, mr = wb_imin(WB_SP_MT, M - m0);
        int n0 = nb * WB_SP_NC, nr = wb_imin(WB_SP_NC, N - n0);
        wb_avx2_sparse_tile(xt + (size_t)mb * Kb * WB_SP_MT * 4, m0, mr, n0, nr, rpc, nch, col, vals16, e);
        wb_epi_activation(e, m0, mr, n0, nr);
    }
}

/* Activations for the AVX2 16-row sparse kernel: s16 [MB][Kb][16][4] (rows >= M are zero). */
WB_AVX2 static void wb_pack_x_sparse_s16_avx2_mb(const uint8_t *xq, int M, int Kp, int Kb, int mb, int16_t *o) {
    for (int r = 0; r < WB_SP_MT; r++) {
        const int m = mb * WB_SP_MT + r;
        int16_t *d = o + (size_t)r * 4;
        int kb = 0;
        if (m < M) {
            const uint8_t *a = xq + (size_t)m * Kp;
            for (; kb + 4 <= Kb; kb += 4) {
                __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(a + 4 * kb)));
                __m128i l = _mm256_castsi256_si128(v), h = _mm256_extracti128_si256(v, 1);
                _mm_storel_epi64((__m128i *)(d + (size_t)(kb + 0) * WB_SP_MT * 4), l);
                _mm_storeh_pd((double *)(d + (size_t)(kb + 1) * WB_SP_MT * 4), _mm_castsi128_pd(l));
                _mm_storel_epi64((__m128i *)(d + (size_t)(kb + 2) * WB_SP_MT * 4), h);
                _mm_storeh_pd((double *)(d + (size_t)(kb + 3) * WB_SP_MT * 4), _mm_castsi128_pd(h));
            }
            for (; kb < Kb; kb++) {
                int16_t *q = d + (size_t)kb * WB_SP_MT * 4;
                q[0] = a[4 * kb]; q[1] = a[4 * kb + 1]; q[2] = a[4 * kb + 2]; q[3] = a[4 * kb + 3];
            }
        } else {
            for (; kb < Kb; kb++) memset(d + (size_t)kb * WB_SP_MT * 4, 0, 8);
        }
    }
}

static void wb_pack_x_sparse_s16_avx2(const uint8_t *xq, int M, int Kp, int Kb, int16_t *out, int nt) {
    const int MB = (M + WB_SP_MT - 1) / WB_SP_MT;
    #pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && (long)M * Kb > 16384)
    for (int mb = 0; mb < MB; mb++)
        wb_pack_x_sparse_s16_avx2_mb(xq, M, Kp, Kb, mb, out + (size_t)mb * Kb * WB_SP_MT * 4);
}

/* ---- AVX2 sparse, 32-row variant: activations stay u8 ([MB32][Kb][32][4], 128 B per block,
 * so a 32-row slab for K = 768 is 24 KB) and are widened with vpmovzxbw at load time.  Halves
 * the per-(column, tile) cost (loop exits, reductions, epilogue) relative to 16 rows. */
#define WB_SP_MT32 32

WB_AVX2 static inline __attribute__((always_inline)) void
wb_avx2_sparse_col32(const uint8_t *Xt, const int32_t *col, const int16_t *vals16, int b, const int b1,
                     __m256i *out /* [4]: rows 0-7, 8-15, 16-23, 24-31 */) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (; b < b1; b++) {
        int64_t wv;
        memcpy(&wv, vals16 + 4 * (size_t)b, 8);
        const __m256i w = _mm256_set1_epi64x(wv);
        const uint8_t *x = Xt + (size_t)col[b] * 128;
#define WB_S32(i, acc) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x + 16 * i))), w));
        WB_S32(0, a0) WB_S32(1, a1) WB_S32(2, a2) WB_S32(3, a3)
        WB_S32(4, a4) WB_S32(5, a5) WB_S32(6, a6) WB_S32(7, a7)
#undef WB_S32
    }
    out[0] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a0, a1), 0xD8);
    out[1] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a2, a3), 0xD8);
    out[2] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a4, a5), 0xD8);
    out[3] = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a6, a7), 0xD8);
}

WB_AVX2 static void wb_avx2_sparse32_tile(const uint8_t *Xt, int m0, int mr, int n0, int nr,
                                          const int32_t *rp, const int32_t *col,
                                          const int16_t *vals16, const wb_epi_t *e) {
    int32_t zpl[32];
    float xsl[32];
    for (int r = 0; r < 32; r++) {
        zpl[r] = r < mr ? e->zp[m0 + r] : 0;
        xsl[r] = r < mr ? e->xscale[m0 + r] : 0.0f;
    }
    const int N = e->N;
    void *outp = e->yi ? (void *)e->yi : (void *)e->y;
    for (int jg = 0; jg < nr; jg += 8) {
        const int nc = wb_imin(8, nr - jg);
        __m256 R[4][8];
        for (int jj = 0; jj < 8; jj++) {
            if (jj >= nc) { for (int g = 0; g < 4; g++) R[g][jj] = _mm256_setzero_ps(); continue; }
            const int n = n0 + jg + jj;
            __m256i v[4];
            wb_avx2_sparse_col32(Xt, col, vals16, rp[n], rp[n + 1], v);
            const __m256i ws = _mm256_set1_epi32(e->wsum[n]);
            const __m256 wsc = _mm256_set1_ps(e->wscale[n]), bb = _mm256_set1_ps(e->bias[n]);
            for (int g = 0; g < 4; g++) {
                __m256i c = _mm256_sub_epi32(v[g], _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(zpl + 8 * g)), ws));
                if (e->yi) R[g][jj] = _mm256_castsi256_ps(c);
                else R[g][jj] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(c), _mm256_mul_ps(_mm256_loadu_ps(xsl + 8 * g), wsc)), bb);
            }
        }
        for (int g = 0; g < 4 && 8 * g < mr; g++)
            wb_store_8x8_t(R[g], mr - 8 * g, nc, outp, (size_t)N, (size_t)(m0 + 8 * g) * N + n0 + jg);
    }
}

static void wb_pack_x_sparse_u8_32(const uint8_t *xq, int M, int Kp, int Kb, uint8_t *out, int nt) {
    const int MB = (M + WB_SP_MT32 - 1) / WB_SP_MT32;
    #pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && (long)M * Kb > 16384)
    for (int mb = 0; mb < MB; mb++) {
        uint8_t *o = out + (size_t)mb * Kb * WB_SP_MT32 * 4;
        for (int r = 0; r < WB_SP_MT32; r++) {
            int m = mb * WB_SP_MT32 + r;
            for (int kb = 0; kb < Kb; kb++) {
                uint8_t *d = o + ((size_t)kb * WB_SP_MT32 + r) * 4;
                if (m < M) memcpy(d, xq + (size_t)m * Kp + 4 * (size_t)kb, 4);
                else memset(d, 0, 4);
            }
        }
    }
}

static void wb_sparse_avx2_32(const uint8_t *xt, int M, int Kb, const int32_t *rp, const int32_t *col,
                              const int16_t *vals16, int N, const wb_epi_t *e, int nt) {
    const int MB = (M + WB_SP_MT32 - 1) / WB_SP_MT32, NB = (N + WB_SP_NC - 1) / WB_SP_NC;
    const long total = (long)MB * NB;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && total > 1)
    for (long t = 0; t < total; t++) {
        int mb = (int)(t / NB), nb = (int)(t % NB);
        int m0 = mb * WB_SP_MT32, mr = wb_imin(WB_SP_MT32, M - m0);
        int n0 = nb * WB_SP_NC, nr = wb_imin(WB_SP_NC, N - n0);
        wb_avx2_sparse32_tile(xt + (size_t)mb * Kb * WB_SP_MT32 * 4, m0, mr, n0, nr, rp, col, vals16, e);
        wb_epi_activation(e, m0, mr, n0, nr);
    }
}

/* ---- AVX-512 VNNI sparse: tiles of MT = 16 * G rows (G = 1..4 zmm per column), activations
 * u8 [MB][Kb][MT][4] (64 * G bytes per 1x4 block, rows >= M zero).  Per stored block: one
 * broadcast of its 4 weights, G loads of X and G vpdpbusd (16 rows x 4 k each); two output
 * columns at a time (2 * G independent accumulator chains).  The int32 column sums go to a
 * column-major tile Ct[j][64]; the epilogue (zero-point, scales, bias: the same float operations
 * as wb_epilogue, so bit-identical) runs over rows in AVX2 lanes and is stored with 8x8
 * transposes (wb_sparse_colmajor_epilogue). */
#define WB_SPV_NC 32
#ifndef WB_SPV_GMAX
#define WB_SPV_GMAX 4
#endif

static int wb_sparse_vnni_groups(int M) {
    int g = (M + 15) / 16;
    return g > WB_SPV_GMAX ? WB_SPV_GMAX : (g < 1 ? 1 : g);
}

static void wb_pack_x_sparse_u8_g(const uint8_t *xq, int M, int Kp, int Kb, int G, uint8_t *out, int nt) {
    const int MT = 16 * G, MB = (M + MT - 1) / MT;
    #pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && (long)M * Kb > 16384)
    for (int mb = 0; mb < MB; mb++) {
        uint8_t *o = out + (size_t)mb * Kb * MT * 4;
        for (int r = 0; r < MT; r++) {
            int m = mb * MT + r;
            if (m < M) {
                const uint8_t *a = xq + (size_t)m * Kp;
                for (int kb = 0; kb < Kb; kb++) memcpy(o + ((size_t)kb * MT + r) * 4, a + 4 * (size_t)kb, 4);
            } else {
                for (int kb = 0; kb < Kb; kb++) memset(o + ((size_t)kb * MT + r) * 4, 0, 4);
            }
        }
    }
}

/* the original 16-row layout (G = 1), kept for callers of the old API */
static void wb_pack_x_sparse_u8(const uint8_t *xq, int M, int Kp, int Kb, uint8_t *out, int nt) {
    wb_pack_x_sparse_u8_g(xq, M, Kp, Kb, 1, out, nt);
}

/* The zero points and scales of a sparse tile's rows m0..m0+mr-1, zero-padded to 64 rows. */
static inline void wb_tile_row_params(const wb_epi_t *e, int m0, int mr, int32_t *zpl, float *xsl) {
    for (int r = 0; r < 64; r++) {
        zpl[r] = r < mr ? e->zp[m0 + r] : 0;
        xsl[r] = r < mr ? e->xscale[m0 + r] : 0.0f;
    }
}

/* Epilogue of one sparse tile from a column-major int32 tile Ct[j * 64 + r] (r < mr <= 64,
 * j < nr <= WB_SPV_NC): y[m0 + r][n0 + j] (or the exact integers in yi). */
WB_AVX2 __attribute__((noinline)) static void
wb_sparse_colmajor_epilogue(const int32_t *Ct, int m0, int mr, int n0, int nr, const wb_epi_t *e) {
    /* e's fields in locals: with -fno-strict-aliasing every output store could alias them */
    const int32_t *wsum = e->wsum + n0;
    const float *wscale = e->wscale + n0, *bias = e->bias + n0;
    const int as_int = e->yi != NULL;
    void *outp = as_int ? (void *)e->yi : (void *)e->y;
    const size_t N = (size_t)e->N;
    int32_t zpl[64];
    float xsl[64];
    wb_tile_row_params(e, m0, mr, zpl, xsl);
    for (int rg = 0; rg < mr; rg += 8) {
        const __m256i zp = _mm256_loadu_si256((const __m256i *)(zpl + rg));
        const __m256 xs = _mm256_loadu_ps(xsl + rg);
        for (int jg = 0; jg < nr; jg += 8) {
            const int nc = wb_imin(8, nr - jg);
            __m256 R[8];
            for (int jj = 0; jj < 8; jj++) {
                if (jj >= nc) { R[jj] = _mm256_setzero_ps(); continue; }
                const int j = jg + jj;
                __m256i c = _mm256_loadu_si256((const __m256i *)(Ct + (size_t)j * 64 + rg));
                c = _mm256_sub_epi32(c, _mm256_mullo_epi32(zp, _mm256_set1_epi32(wsum[j])));
                if (as_int) R[jj] = _mm256_castsi256_ps(c);
                else R[jj] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(c), _mm256_mul_ps(xs, _mm256_set1_ps(wscale[j]))),
                                           _mm256_set1_ps(bias[j]));
            }
            wb_store_8x8_t(R, mr - rg, nc, outp, N, (size_t)(m0 + rg) * N + n0 + jg);
        }
    }
}

#ifndef WB_EMULATE_ISA   /* testing/emulate_isa.c stands in its own __m512i: not for this code */
/* wb_sparse_colmajor_epilogue on 16 rows x 16 columns at a time: the same lane-wise operations
 * (so the same bits), half the instructions per output and whole 64-byte row stores. The sparse
 * kernel's Ct tile is column-major, so the output needs a transpose either way; at 90 %
 * sparsity the epilogue was as long as the multiply-adds (perf, 128 x 768 x 3072). */
WB_AVX512F __attribute__((noinline)) static void
wb_sparse_colmajor_epilogue_avx512(const int32_t *Ct, int m0, int mr, int n0, int nr, const wb_epi_t *e) {
    const int32_t *wsum = e->wsum + n0;
    const float *wscale = e->wscale + n0, *bias = e->bias + n0;
    const int as_int = e->yi != NULL;
    char *outp = as_int ? (char *)e->yi : (char *)e->y;
    const size_t N = (size_t)e->N;
    int32_t zpl[64];
    float xsl[64];
    wb_tile_row_params(e, m0, mr, zpl, xsl);
    float T[16 * WB_SPV_NC] __attribute__((aligned(64)));   /* 16 output rows, row-major */
    for (int rg = 0; rg < mr; rg += 16) {
        const __m512i zp = _mm512_loadu_si512((const void *)(zpl + rg));
        const __m512 xs = _mm512_loadu_ps(xsl + rg);
        const int rows = mr - rg < 16 ? mr - rg : 16;
        for (int jg = 0; jg < nr; jg += 16) {
            const int nc = wb_imin(16, nr - jg);
            __m512 R[16];
            #pragma GCC unroll 16
            for (int jj = 0; jj < 16; jj++) {   /* fully unrolled: R stays in registers */
                const int j = jg + (jj < nc ? jj : nc - 1);   /* past nr: a repeat, never stored */
                __m512i c = _mm512_loadu_si512((const void *)(Ct + (size_t)j * 64 + rg));
                c = _mm512_sub_epi32(c, _mm512_mullo_epi32(zp, _mm512_set1_epi32(wsum[j])));
                if (as_int) R[jj] = _mm512_castsi512_ps(c);
                else R[jj] = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(c), _mm512_mul_ps(xs, _mm512_set1_ps(wscale[j]))),
                                           _mm512_set1_ps(bias[j]));
            }
            wb_transpose16(R);
            #pragma GCC unroll 16
            for (int r = 0; r < 16; r++) _mm512_store_ps(T + r * WB_SPV_NC + jg, R[r]);
        }
        /* each output row's nr values in one sweep: a cache line is written whole, once. Row
         * strides of 768 / 2304 / 3072 floats put every row of the tile in the same L1 sets, so
         * 16 rows x 16 columns at a time (each 64-byte store straddling two lines of unaligned
         * NumPy memory) evicted lines before their second half was written: 2x slower at
         * N = 3072 than at N = 3056 in the same run. */
        for (int r = 0; r < rows; r++) {
            char *dst = outp + 4 * ((size_t)(m0 + rg + r) * N + n0);
            for (int jg = 0; jg < nr; jg += 16) {
                const int nc = wb_imin(16, nr - jg);
                const __mmask16 keep = (__mmask16)(nc == 16 ? 0xFFFF : (1u << nc) - 1u);
                _mm512_mask_storeu_ps((float *)(dst + 4 * jg), keep, _mm512_load_ps(T + r * WB_SPV_NC + jg));
            }
        }
    }
}

/* wb_pack_x_sparse_u8_g with 16 x 16 transposes of 4-byte groups: xt32[kb][r] = xq32[r][kb]
 * (the scalar version stores 4 bytes at a 64*G-byte stride, one cache line per store). */
WB_AVX512F static void wb_pack_x_sparse_u8_g_avx512(const uint8_t *xq, int M, int Kp, int Kb, int G, uint8_t *out, int nt) {
    const int MT = 16 * G, MB = (M + MT - 1) / MT;
    const long groups = (long)MB * G;               /* 16-row groups */
    #pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && (long)M * Kb > 16384)
    for (long t = 0; t < groups; t++) {
        const int mb = (int)(t / G), g = (int)(t % G);
        const int r0 = mb * MT + 16 * g;             /* first row of this group */
        int32_t *o = (int32_t *)(out + (size_t)mb * Kb * MT * 4) + 16 * g;
        const int rows = M - r0 < 16 ? (M - r0 > 0 ? M - r0 : 0) : 16;
        int kb = 0;
        for (; kb + 16 <= Kb; kb += 16) {
            __m512 R[16];
            #pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                R[i] = i < rows ? _mm512_loadu_ps((const float *)(xq + (size_t)(r0 + i) * Kp + 4 * (size_t)kb))
                                : _mm512_setzero_ps();
            wb_transpose16(R);
            #pragma GCC unroll 16
            for (int i = 0; i < 16; i++) _mm512_storeu_ps((float *)(o + (size_t)(kb + i) * MT), R[i]);
        }
        for (; kb < Kb; kb++)
            for (int i = 0; i < 16; i++) {
                int32_t v = 0;
                if (i < rows) memcpy(&v, xq + (size_t)(r0 + i) * Kp + 4 * (size_t)kb, 4);
                o[(size_t)kb * MT + i] = v;
            }
    }
}

#define WB_SPARSE_VNNI_EPILOGUE wb_sparse_colmajor_epilogue_avx512
#define WB_PACK_X_SPARSE_VNNI wb_pack_x_sparse_u8_g_avx512
#else   /* the emulation runs where AVX-512 may be missing: the AVX2 epilogue (same bits) */
#define WB_SPARSE_VNNI_EPILOGUE wb_sparse_colmajor_epilogue
#define WB_PACK_X_SPARSE_VNNI wb_pack_x_sparse_u8_g
#endif

/* Sums of 2 columns (rows b..b1 and d..d1 of the CSR) over a tile of 16 * G rows. */
WB_AVX512 static inline __attribute__((always_inline)) void
wb_vnni_sp_pair(const uint8_t *Xt, const int G, const int32_t *col, const int8_t *vals,
                int b, const int b1, int d, const int d1, int32_t *C0, int32_t *C1) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    __m512i e0 = a0, e1 = a0, e2 = a0, e3 = a0;
    const size_t bs = (size_t)64 * G;
#define WB_SPV(bb, A0, A1, A2, A3)                                                             \
    {                                                                                         \
        int32_t wv; memcpy(&wv, vals + 4 * (size_t)(bb), 4);                                  \
        const __m512i w = _mm512_set1_epi32(wv);                                              \
        const uint8_t *x = Xt + (size_t)col[bb] * bs;                                         \
        A0 = _mm512_dpbusd_epi32(A0, _mm512_loadu_si512((const void *)x), w);                 \
        if (G > 1) A1 = _mm512_dpbusd_epi32(A1, _mm512_loadu_si512((const void *)(x + 64)), w);  \
        if (G > 2) A2 = _mm512_dpbusd_epi32(A2, _mm512_loadu_si512((const void *)(x + 128)), w); \
        if (G > 3) A3 = _mm512_dpbusd_epi32(A3, _mm512_loadu_si512((const void *)(x + 192)), w); \
    }
    const int n = wb_imin(b1 - b, d1 - d);
    for (int i = 0; i < n; i++) {
        WB_SPV(b + i, a0, a1, a2, a3)
        WB_SPV(d + i, e0, e1, e2, e3)
    }
    for (b += n; b < b1; b++) WB_SPV(b, a0, a1, a2, a3)
    for (d += n; d < d1; d++) WB_SPV(d, e0, e1, e2, e3)
#undef WB_SPV
    _mm512_storeu_si512((void *)C0, a0);
    if (G > 1) _mm512_storeu_si512((void *)(C0 + 16), a1);
    if (G > 2) _mm512_storeu_si512((void *)(C0 + 32), a2);
    if (G > 3) _mm512_storeu_si512((void *)(C0 + 48), a3);
    if (C1) {
        _mm512_storeu_si512((void *)C1, e0);
        if (G > 1) _mm512_storeu_si512((void *)(C1 + 16), e1);
        if (G > 2) _mm512_storeu_si512((void *)(C1 + 32), e2);
        if (G > 3) _mm512_storeu_si512((void *)(C1 + 48), e3);
    }
}

#define WB_VNNI_SP_TILE(G)                                                                    \
WB_AVX512 static void wb_vnni_sparse_tile_g##G(const uint8_t *Xt, int n0, int nr, const int32_t *rp, \
                                               const int32_t *col, const int8_t *vals, int32_t *Ct) { \
    int j = 0;                                                                                \
    for (; j + 2 <= nr; j += 2)                                                               \
        wb_vnni_sp_pair(Xt, G, col, vals, rp[n0 + j], rp[n0 + j + 1], rp[n0 + j + 1], rp[n0 + j + 2], \
                        Ct + (size_t)j * 64, Ct + (size_t)(j + 1) * 64);                      \
    if (j < nr)                                                                               \
        wb_vnni_sp_pair(Xt, G, col, vals, rp[n0 + j], rp[n0 + j + 1], 0, 0, Ct + (size_t)j * 64, NULL); \
}
WB_VNNI_SP_TILE(1)
WB_VNNI_SP_TILE(2)
WB_VNNI_SP_TILE(3)
WB_VNNI_SP_TILE(4)

/* xt: packed by wb_pack_x_sparse_u8_g with the same G (G = wb_sparse_vnni_groups(M) by default). */
static void wb_sparse_vnni_g(const uint8_t *xt, int M, int Kb, int G, const int32_t *rp, const int32_t *col,
                             const int8_t *vals, int N, const wb_epi_t *e, int nt) {
    const int MT = 16 * G, MB = (M + MT - 1) / MT, NB = (N + WB_SPV_NC - 1) / WB_SPV_NC;
    const long total = (long)MB * NB;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && total > 1)
    for (long t = 0; t < total; t++) {
        int mb = (int)(t / NB), nb = (int)(t % NB);
        int m0 = mb * MT, mr = wb_imin(MT, M - m0);
        int n0 = nb * WB_SPV_NC, nr = wb_imin(WB_SPV_NC, N - n0);
        int32_t Ct[WB_SPV_NC * 64] __attribute__((aligned(64)));
        const uint8_t *X = xt + (size_t)mb * Kb * MT * 4;
        switch (G) {
            case 4: wb_vnni_sparse_tile_g4(X, n0, nr, rp, col, vals, Ct); break;
            case 3: wb_vnni_sparse_tile_g3(X, n0, nr, rp, col, vals, Ct); break;
            case 2: wb_vnni_sparse_tile_g2(X, n0, nr, rp, col, vals, Ct); break;
            default: wb_vnni_sparse_tile_g1(X, n0, nr, rp, col, vals, Ct); break;
        }
        WB_SPARSE_VNNI_EPILOGUE(Ct, m0, mr, n0, nr, e);
        wb_epi_activation(e, m0, mr, n0, nr);
    }
}

/* the original API: 16-row tiles */
static void wb_sparse_vnni(const uint8_t *xt, int M, int Kb, const int32_t *rp, const int32_t *col,
                           const int8_t *vals, int N, const wb_epi_t *e, int nt) {
    wb_sparse_vnni_g(xt, M, Kb, 1, rp, col, vals, N, e, nt);
}

#endif
