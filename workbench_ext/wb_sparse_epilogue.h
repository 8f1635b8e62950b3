/* The sparse kernels' epilogue: their int32 tiles are column-major (Ct[j * 64 + r]: 16-row
 * vectors of one output column), so every output passes a transpose on its way out. Shared by
 * the 1x4 block-sparse (wb_int8_sparse_vnni.h) and the 16x64 tile-sparse (wb_tile_sparse.h)
 * kernels: WB_SPARSE_VNNI_EPILOGUE. */
#ifndef WB_SPARSE_EPILOGUE_H
#define WB_SPARSE_EPILOGUE_H

#include "wb_int8_sparse_avx2.h"
#include "wb_gelu.h"

#define WB_SPV_NC 32   /* output columns per sparse tile */

/* The zero points and scales of a sparse tile's rows m0..m0+mr-1, zero-padded to 64 rows. */
static inline void wb_tile_row_params(const wb_epi_t *e, int m0, int mr, int32_t *zpl, float *xsl) {
    for (int r = 0; r < 64; r++) {
        zpl[r] = r < mr ? e->zp[m0 + r] : 0;
        xsl[r] = r < mr ? e->xscale[m0 + r] : 0.0f;
    }
}

/* Epilogue of one sparse tile from a column-major int32 tile Ct[j * 64 + r] (r < mr <= 64,
 * j < nr <= WB_SPV_NC): y[m0 + r][n0 + j] (or the exact integers in yi), then the fused activation. */
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
    wb_epi_activation(e, m0, mr, n0, nr);
}

/* 1: the AVX-512 sparse epilogue stores each transposed 16-column row piece straight to the
 * output when every output row starts a cache line; 0: always through its row buffer (the A/B
 * switch, workbench_ext.int8._set_sparse_epi_direct). */
static int wb_sparse_epi_direct = 1;
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
    /* GELU on the registers, before the store (a lane-wise function, so the same bits as
     * wb_epi_activation's pass over the stored tile). That pass read back 64 rows x 32 columns
     * at a row stride of N floats, and at N = 3072 every row maps to the same L1 sets. Zen 4,
     * 128 x 768 x 3072 at 90 % sparsity, 2 threads, the layer with GELU less without, median of
     * 15: 77 us with the pass, 63-66 us here; dense (wb_epilogue_avx512) 94 against 52-59 us.
     * The GELU's arithmetic is most of what is left. */
    const int gelu = !as_int && e->act == WB_ACT_GELU_AVX512;
    char *outp = as_int ? (char *)e->yi : (char *)e->y;
    const size_t N = (size_t)e->N;
    /* the rows' zero points and scales straight from e (masked loads, zero past mr): copying
     * them into 64-row arrays, one scalar at a time, was 14 % of this function (perf, Zen 5,
     * 128 x 768 x 2304 at 90 %) */
    const int32_t *zprow = e->zp + m0;
    const float *xsrow = e->xscale + m0;
    float T[16 * WB_SPV_NC] __attribute__((aligned(64)));   /* 16 output rows, row-major */
    /* Output rows that start cache lines (a 64-byte-aligned buffer, N a multiple of 16: the
     * layers' own outputs and the compiled encoder's buffers): each 16-column piece of a row is
     * one whole line, stored as soon as it is transposed (same-process A/B on AMD EPYC Zen 4:
     * results/bench/zen4-sparse-epilogue/ab-forward.txt). Otherwise (a caller's
     * unaligned `out=`, odd N) the rows go through T, one sweep per row (below). */
    const int direct = wb_sparse_epi_direct && ((uintptr_t)outp & 63) == 0 && (N & 15) == 0;
    for (int rg = 0; rg < mr; rg += 16) {
        const int rows = mr - rg < 16 ? mr - rg : 16;
        const __mmask16 live = (__mmask16)(rows == 16 ? 0xFFFF : (1u << rows) - 1u);
        const __m512i zp = _mm512_maskz_loadu_epi32(live, zprow + rg);
        const __m512 xs = _mm512_maskz_loadu_ps(live, xsrow + rg);
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
                if (gelu) R[jj] = wb_gelu_ps512(R[jj]);
            }
            wb_transpose16(R);
            if (direct) {
                const __mmask16 keep = (__mmask16)(nc == 16 ? 0xFFFF : (1u << nc) - 1u);
                for (int r = 0; r < rows; r++)
                    _mm512_mask_storeu_ps((float *)(outp + 4 * ((size_t)(m0 + rg + r) * N + n0 + jg)), keep, R[r]);
                continue;
            }
            #pragma GCC unroll 16
            for (int r = 0; r < 16; r++) _mm512_store_ps(T + r * WB_SPV_NC + jg, R[r]);
        }
        if (direct) continue;
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
    if (!gelu) wb_epi_activation(e, m0, mr, n0, nr);
}

#define WB_SPARSE_VNNI_EPILOGUE wb_sparse_colmajor_epilogue_avx512
#else   /* the emulation runs where AVX-512 may be missing: the AVX2 epilogue (same bits) */
#define WB_SPARSE_VNNI_EPILOGUE wb_sparse_colmajor_epilogue
#endif

#endif
