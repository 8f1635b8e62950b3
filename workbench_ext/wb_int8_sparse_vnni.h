/* 1x4 block-sparse int8 GEMM on AVX-512 VNNI (16 * G-row tiles) and its column-major epilogue. */
#ifndef WB_INT8_SPARSE_VNNI_H
#define WB_INT8_SPARSE_VNNI_H

#include "wb_int8_sparse_avx2.h"
#include "wb_quant.h"

#define WB_SPV_NC 32
#ifndef WB_SPV_GMAX
#define WB_SPV_GMAX 4
#endif

/* The most 16-row groups a tile of activations takes: 1..4 as set by the A/B switch
 * (workbench_ext.int8._set_sparse_vnni_groups), 0 (the default) by the layer's K: 4, or 2 where a
 * 4-group tile's activations (Kb x 64 x 4 bytes) would pass 96 KB (K > 1536). More groups reuse
 * each weight block's broadcast on more rows; fewer keep a tile's activations nearer the core.
 * On a Zen 4 at 90 % sparsity (1 and 2 threads, a C harness and amx_ab.py run on VNNI), 4 groups
 * were the fastest at 128 x 768 x 3072 / 2304 / 768 (1.05-1.2x over 2) and 2 groups at 128 x 3072
 * x 768 (1.08-1.13x over 4). Intel's cores are untimed (results/bench/emr-amx/amx_ab.py). */
static int wb_spv_gmax = 0;
#define WB_SPV_AUTO_BYTES (96L * 1024)

static int wb_sparse_vnni_groups(int M, int Kb) {
    int gmax = wb_spv_gmax;
    if (gmax < 1) gmax = (long)Kb * 64 * WB_SPV_GMAX > WB_SPV_AUTO_BYTES ? 2 : WB_SPV_GMAX;
    if (gmax > WB_SPV_GMAX) gmax = WB_SPV_GMAX;
    int g = (M + 15) / 16;
    return g > gmax ? gmax : (g < 1 ? 1 : g);
}

static void wb_pack_x_sparse_u8_g_chunk(void *p, long b, long e) {
    const wb_pack_job_t *j = (const wb_pack_job_t *)p;
    const int MT = 16 * j->G, Kb = j->Kb;
    for (long mb = b; mb < e; mb++) {
        uint8_t *o = (uint8_t *)j->out + (size_t)mb * Kb * MT * 4;
        for (int r = 0; r < MT; r++) {
            int m = (int)mb * MT + r;
            if (m < j->M) {
                const uint8_t *a = j->xq + (size_t)m * j->Kp;
                for (int kb = 0; kb < Kb; kb++) memcpy(o + ((size_t)kb * MT + r) * 4, a + 4 * (size_t)kb, 4);
            } else {
                for (int kb = 0; kb < Kb; kb++) memset(o + ((size_t)kb * MT + r) * 4, 0, 4);
            }
        }
    }
}

static void wb_pack_x_sparse_u8_g(const uint8_t *xq, int M, int Kp, int Kb, int G, uint8_t *out, int nt) {
    const int MT = 16 * G, MB = (M + MT - 1) / MT;
    wb_pack_job_t job = {xq, M, Kp, Kb, G, out};
    wb_parallel_for((long)M * Kb > 16384 ? nt : 1, MB, wb_grain(MB, nt, 2), wb_pack_x_sparse_u8_g_chunk, &job);
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

/* wb_pack_x_sparse_u8_g with 16 x 16 transposes of 4-byte groups: xt32[kb][r] = xq32[r][kb]
 * (the scalar version stores 4 bytes at a 64*G-byte stride, one cache line per store). */
WB_AVX512F static void wb_pack_x_sparse_u8_g_avx512_chunk(void *p, long tb, long te) {
    const wb_pack_job_t *j = (const wb_pack_job_t *)p;
    const int G = j->G, MT = 16 * G, M = j->M, Kb = j->Kb, Kp = j->Kp;
    const uint8_t *xq = j->xq;
    for (long t = tb; t < te; t++) {
        const int mb = (int)(t / G), g = (int)(t % G);
        const int r0 = mb * MT + 16 * g;             /* first row of this group */
        int32_t *o = (int32_t *)((uint8_t *)j->out + (size_t)mb * Kb * MT * 4) + 16 * g;
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

static void wb_pack_x_sparse_u8_g_avx512(const uint8_t *xq, int M, int Kp, int Kb, int G, uint8_t *out, int nt) {
    const int MT = 16 * G, MB = (M + MT - 1) / MT;
    const long groups = (long)MB * G;               /* 16-row groups */
    wb_pack_job_t job = {xq, M, Kp, Kb, G, out};
    wb_parallel_for((long)M * Kb > 16384 ? nt : 1, groups, wb_grain(groups, nt, 2), wb_pack_x_sparse_u8_g_avx512_chunk, &job);
}

#define WB_SPARSE_VNNI_EPILOGUE wb_sparse_colmajor_epilogue_avx512
#define WB_PACK_X_SPARSE_VNNI wb_pack_x_sparse_u8_g_avx512

/* Per-token quantization and the tile packing in one parallel job: item t quantizes rows
 * 16t..16t+15 of x into xq (wb_quant_row, so the same bytes, scales and zero points as
 * wb_quantize_rows) and packs that 16-row group into xt at once (wb_pack_x_sparse_u8_g_avx512's
 * item t), while the rows are in this thread's cache. Two jobs, one after the other, paid a
 * second fork and join per layer, and the packing thread read rows the other one had written. */
typedef struct { wb_pack_job_t pack; const float *x; int K; float *scale; int32_t *zp; int isa; float qmax; } wb_quant_pack_job_t;

static void wb_quant_pack_sparse_vnni_chunk(void *p, long tb, long te) {
    const wb_quant_pack_job_t *j = (const wb_quant_pack_job_t *)p;
    const int M = j->pack.M, Kp = j->pack.Kp;
    uint8_t *xq = (uint8_t *)j->pack.xq;   /* this job's own rows: it writes them */
    for (long t = tb; t < te; t++) {
        const int r1 = wb_imin((int)t * 16 + 16, M);
        for (int m = (int)t * 16; m < r1; m++)
            wb_quant_row(j->isa, j->x + (size_t)m * j->K, j->K, Kp, j->qmax, xq + (size_t)m * Kp, j->scale + m, j->zp + m);
        wb_pack_x_sparse_u8_g_avx512_chunk((void *)&j->pack, t, t + 1);
    }
}

/* x float32[M][K] -> xq uint8[M][Kp] (scratch rows for the packing), scale / zp per row, and xt
 * packed as WB_PACK_X_SPARSE_VNNI packs xq with groups G; qmax 255 or 127 as wb_quantize_rows.
 * Threads as wb_quantize_rows chooses them (wb_quant_threads). */
static void wb_quant_pack_sparse_vnni(const float *x, int M, int K, int Kp, int Kb, int G, uint8_t *xq,
                                      float *scale, int32_t *zp, uint8_t *xt, int isa, int nt, int qmax) {
    const int MT = 16 * G, MB = (M + MT - 1) / MT;
    const long groups = (long)MB * G;               /* 16-row groups */
    nt = wb_threads(nt);
    wb_quant_pack_job_t job = {{xq, M, Kp, Kb, G, xt}, x, K, scale, zp, isa, (float)qmax};
    wb_parallel_for(wb_quant_threads(M, K, nt), groups, wb_grain(groups, nt, 2), wb_quant_pack_sparse_vnni_chunk, &job);
}
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

/* xt: packed by wb_pack_x_sparse_u8_g with the same G (G = wb_sparse_vnni_groups(M, Kb) by default). */
static void wb_sparse_vnni_chunk(void *p, long tb, long te) {
    const wb_sparse_job_t *j = (const wb_sparse_job_t *)p;
    const int G = j->G, MT = 16 * G;
    for (long t = tb; t < te; t++) {
        int mb, nb;
        wb_epi_item(j->e, t, j->MB, j->NB, 1, &mb, &nb);
        int m0 = mb * MT, mr = wb_imin(MT, j->M - m0);
        int n0 = nb * WB_SPV_NC, nr = wb_imin(WB_SPV_NC, j->N - n0);
        int32_t Ct[WB_SPV_NC * 64] __attribute__((aligned(64)));
        const uint8_t *X = (const uint8_t *)j->x + (size_t)mb * j->Kb * MT * 4;
        const int8_t *vals = (const int8_t *)j->vals;
        switch (G) {
            case 4: wb_vnni_sparse_tile_g4(X, n0, nr, j->rp, j->col, vals, Ct); break;
            case 3: wb_vnni_sparse_tile_g3(X, n0, nr, j->rp, j->col, vals, Ct); break;
            case 2: wb_vnni_sparse_tile_g2(X, n0, nr, j->rp, j->col, vals, Ct); break;
            default: wb_vnni_sparse_tile_g1(X, n0, nr, j->rp, j->col, vals, Ct); break;
        }
        WB_SPARSE_VNNI_EPILOGUE(Ct, m0, mr, n0, nr, j->e);   /* and the fused activation */
    }
}

static void wb_sparse_vnni_g(const uint8_t *xt, int M, int Kb, int G, const int32_t *rp, const int32_t *col,
                             const int8_t *vals, int N, const wb_epi_t *e, int nt) {
    const int MT = 16 * G, MB = (M + MT - 1) / MT, NB = (N + WB_SPV_NC - 1) / WB_SPV_NC;
    wb_sparse_job_t job = {xt, M, 0, Kb, G, MB, NB, rp, 0, col, vals, N, e};
    wb_parallel_for(nt, (long)MB * NB, 1, wb_sparse_vnni_chunk, &job);
}

/* the original API: 16-row tiles */
static void wb_sparse_vnni(const uint8_t *xt, int M, int Kb, const int32_t *rp, const int32_t *col,
                           const int8_t *vals, int N, const wb_epi_t *e, int nt) {
    wb_sparse_vnni_g(xt, M, Kb, 1, rp, col, vals, N, e, nt);
}

#endif
